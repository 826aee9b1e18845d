"""Training on published prefdelta datasets: TRL DPO and KTO on delta-filtered splits.

``prefdelta.train.dpo`` and ``prefdelta.train.kto`` are scripts in the style of TRL's own
(``accelerate launch -m prefdelta.train.dpo CONFIG.yaml``); ``prefdelta.train.sweep`` runs
the paper's three experiments (top-k vs random-k, generator gap, correctness directions).
Importing this package imports nothing heavy: TRL and torch load with the script that
needs them.

May import: ``loading``, ``push``, ``builders``, ``recipe``, ``schema`` and the shared
bottom modules. Never ``review`` (its sibling layer) or ``cli`` (the import contract in
pyproject.toml checks it).
"""
