"""``python -m prefdelta`` is the ``prefdelta`` command."""

from prefdelta.cli import app

app(prog_name="prefdelta")
