"""Human review in Argilla: a local stack to review in, and (later) sampling, pulling answers and
agreement. Submodules load lazily: ``argilla_engine`` runs only inside the Argilla server venv."""
