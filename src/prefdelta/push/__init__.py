"""Publish a finished build: the Hub layout, its dataset card with plots, Hub or folder.

Modules, bottom up: ``errors``; ``options`` (the publish defaults); ``build_folder`` (read
and verify a build); ``plots`` and ``card``; ``layout`` (stage the published files);
``hub`` (the Hub transport); ``reviews`` (add human reviews); ``publish`` (Hub or folder).

May import: ``builders``, ``recipe``, ``schema`` and the shared bottom modules. Never
``loading`` (its sibling layer), ``review``, ``train`` or ``cli`` (the import contract in
pyproject.toml checks it).
"""

from prefdelta.push.errors import BuildFolderError, PublishError
from prefdelta.push.options import PublishOptions, publish_options, publish_target
from prefdelta.push.publish import PublishResult, publish_build

__all__ = [
    "BuildFolderError",
    "PublishError",
    "PublishOptions",
    "PublishResult",
    "publish_build",
    "publish_options",
    "publish_target",
]
