"""The ``prefdelta`` command: validate, inspect, build, publish, review, train.

Each command is a thin shell over one stage module: :mod:`~prefdelta.cli.build` (validate,
inspect, build, publish), :mod:`~prefdelta.cli.train` (train, sweep) and
:mod:`~prefdelta.cli.review` (review serve, push, pull), all on the app of
:mod:`~prefdelta.cli.app`. Errors a user can fix are printed as one line each and exit with
status 1, never as a traceback: :mod:`~prefdelta.cli.errors`. ``prefdelta.cli:app`` is the
console script.
"""

from prefdelta.cli import build, review, train  # noqa: F401  (each registers its commands)
from prefdelta.cli.app import app

__all__ = ["app"]
