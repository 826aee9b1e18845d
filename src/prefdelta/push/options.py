"""How a build is published: the recipe's ``publish`` section, with what a caller overrides.

The one place the defaults are resolved, for ``prefdelta build`` (the recipe alone),
``prefdelta publish`` (its flags over the recipe the build recorded) and
:func:`prefdelta.push.publish_build` (what its caller left out, from the build's recipe).
It is also the one place that refuses a Hub-only option (``private``, ``revision``,
``tag``) given for a folder target, instead of ignoring it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefdelta.locations import is_hub_id, is_local_path
from prefdelta.push.errors import PublishError
from prefdelta.recipe import PUBLISH_HUB_ONLY

if TYPE_CHECKING:
    from prefdelta.recipe import PublishConfig

__all__ = ["PublishOptions", "check_target", "publish_options", "publish_target"]

# How a user gives each Hub-only option on the command line.
_FLAGS = {"private": "--public", "revision": "--revision", "tag": "--no-tag"}


@dataclass(frozen=True)
class PublishOptions:
    """Resolved options of one publish; :meth:`as_kwargs` gives ``publish_build``'s keywords.

    ``private``, ``revision`` and ``tag`` are None for a folder: they do not apply to it.
    """

    private: bool | None = True
    revision: str | None = "main"
    tag: bool | None = True
    test_size: float | None = None
    overwrite: bool = False
    license: str = "apache-2.0"
    sort_by: str = "delta"

    def as_kwargs(self) -> dict[str, Any]:
        return asdict(self)


def check_target(target: str | os.PathLike[str]) -> None:
    """A target given as text must be a Hub repo id (``org/name``) or a path that says it
    is one (``./x``, ``../x``, ``/x``, ``~/x``, or a folder that exists): a typo such as
    ``bad id/with space`` or ``a/b/c`` must not silently become a local folder."""
    if is_local_path(target) or is_hub_id(target):
        return
    raise PublishError(
        f"publish target {str(target)!r} is neither a Hub repo id (org/name) nor a folder path "
        "(./name, /path); write ./ before a local folder"
    )


def publish_options(
    settings: PublishConfig | None,
    target: str | os.PathLike[str],
    *,
    private: bool | None = None,
    revision: str | None = None,
    tag: bool | None = None,
    test_size: float | None = None,
    overwrite: bool | None = None,
    license: str | None = None,
    sort_by: str | None = None,
) -> PublishOptions:
    """The recipe's ``settings`` (None: it has no ``publish`` section, the defaults apply),
    each overridden by the keyword given for it (None: not given), for ``target``.

    A folder ``target`` takes no Hub-only option: one given here is refused in one line,
    and those the recipe set (for its own Hub target) are left out.
    """
    check_target(target)
    defaults = PublishOptions()
    hub: dict[str, Any] = {"private": None, "revision": None, "tag": None}
    given = {"private": private, "revision": revision, "tag": tag}
    if is_hub_id(target):
        for key in PUBLISH_HUB_ONLY:
            recorded = getattr(settings, key) if settings else getattr(defaults, key)
            hub[key] = given[key] if given[key] is not None else recorded
    else:
        named = [_FLAGS[key] for key in PUBLISH_HUB_ONLY if given[key] is not None]
        if named:
            raise PublishError(
                f"{named[0]} applies to Hub targets only, and {target} is a folder; "
                f"leave {named[0]} out, or publish to org/name"
            )
    return PublishOptions(
        **hub,
        test_size=test_size
        if test_size is not None
        else (settings.test_size if settings else None),
        overwrite=overwrite if overwrite is not None else bool(settings and settings.overwrite),
        license=license or (settings.license if settings else defaults.license),
        sort_by=sort_by or (settings.sort_by if settings else defaults.sort_by),
    )


def publish_target(settings: PublishConfig) -> str | Path:
    """Where the recipe's ``publish`` section publishes: its Hub repo id, else its folder."""
    return settings.repo_id or Path(settings.folder or "")
