"""Training on published prefdelta datasets: TRL DPO and KTO on delta-filtered splits.

``prefdelta.train.dpo`` and ``prefdelta.train.kto`` are scripts in the style of TRL's own
(``accelerate launch -m prefdelta.train.dpo CONFIG.yaml``); ``prefdelta.train.sweep`` runs
the paper's delta and generator-pair experiments. Importing this package imports nothing
heavy: TRL and torch load with the script that needs them.
"""
