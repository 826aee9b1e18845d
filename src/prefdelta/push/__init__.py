"""Publish a finished build: the Hub layout, its dataset card with plots, Hub or folder."""

from prefdelta.push.layout import BuildFolderError, PublishError
from prefdelta.push.publish import PublishResult, publish_build

__all__ = ["BuildFolderError", "PublishError", "PublishResult", "publish_build"]
