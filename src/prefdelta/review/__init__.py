"""Human review in Argilla: a local stack, a stratified and blinded sample, answers back.

``stack`` runs the server locally, ``push`` sends a delta-stratified sample, ``pull`` brings
the answers back with judge-human agreement. Submodules load lazily: ``argilla_engine`` runs
only inside the Argilla server's own venv.
"""
