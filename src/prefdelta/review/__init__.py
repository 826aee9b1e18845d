"""Human review in Argilla: a local stack, a stratified and blinded sample, answers back.

``stack`` runs the server locally (from the venv ``server_venv`` finds), ``send`` sends a
delta-stratified sample (``prefdelta review push``), ``pull`` brings the answers back with
judge-human agreement (``argilla_client`` connects, ``records`` is the dataset's schema).
Submodules load lazily. ``server_scripts/argilla_engine.py`` is not a module: it runs only
inside the Argilla server's own venv.

May import: ``loading``, ``push``, ``builders``, ``recipe``, ``schema`` and the shared
bottom modules. Never ``train`` (its sibling layer) or ``cli`` (the import contract in
pyproject.toml checks it).
"""
