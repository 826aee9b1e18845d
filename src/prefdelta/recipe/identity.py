"""What makes two builds' results the same, declared on every field of the recipe.

Each field of every recipe model is declared with one of four identities, and the recipe
hash (:meth:`~prefdelta.recipe.BuildRecipe.content_hash`, the ``recipe-<hash12>`` tag and
the review dataset's name) and the result store's keys (:mod:`prefdelta.builders.keys`)
are derived from those declarations. A field that nobody classified would silently change,
or fail to change, both; a test refuses any field declared without one.

- ``content``: defines the data; part of the recipe hash and of the cache keys.
- ``operational``: how results are fetched or described (batch sizes, concurrency, URLs,
  keys, timeouts, retries, re-asks, a generator's description): left out of the cache
  keys, so tuning them reuses every result, but part of the recipe hash, which has named
  the recipe as written since the first release.
- ``outside``: never changes what a build writes (what a model costs, where the dataset
  is published, the build folder, Ray, the recipe's description): left out of both.
- ``later``: an option added after the first release: counted, in both, only when set, so
  a recipe that does not use it keeps the hash and the keys it had before.
"""

from __future__ import annotations

import typing
from typing import Any, Literal

from pydantic import BaseModel, Field

Identity = Literal["content", "operational", "outside", "later"]
IDENTITIES: tuple[Identity, ...] = typing.get_args(Identity)
Purpose = Literal["hash", "key"]

# what each purpose leaves out (a `later` field is left out of both while it is unset)
_LEFT_OUT: dict[Purpose, frozenset[str]] = {
    "hash": frozenset({"outside"}),
    "key": frozenset({"operational", "outside"}),
}


def _declared(identity: Identity, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return Field(*args, json_schema_extra={"identity": identity}, **kwargs)


def content(*args: Any, **kwargs: Any) -> Any:
    """A pydantic ``Field`` that defines the data (hash and cache keys)."""
    return _declared("content", args, kwargs)


def operational(*args: Any, **kwargs: Any) -> Any:
    """A pydantic ``Field`` that only changes how results are fetched (hash, not keys)."""
    return _declared("operational", args, kwargs)


def outside(*args: Any, **kwargs: Any) -> Any:
    """A pydantic ``Field`` that never changes what a build writes (neither)."""
    return _declared("outside", args, kwargs)


def later(*args: Any, **kwargs: Any) -> Any:
    """A pydantic ``Field`` added after the first release: counted only when set."""
    return _declared("later", args, kwargs)


def identity_of(model: type[BaseModel], name: str) -> Identity | None:
    """The identity field ``name`` of ``model`` declares, or None if it declares none."""
    extra = model.model_fields[name].json_schema_extra
    value = extra.get("identity") if isinstance(extra, dict) else None
    return typing.cast(Identity, value) if value in IDENTITIES else None


def fields_with(model: type[BaseModel], *identities: Identity) -> frozenset[str]:
    """The fields of ``model`` declared with one of ``identities``."""
    return frozenset(n for n in model.model_fields if identity_of(model, n) in identities)


def identity_body(model: BaseModel, purpose: Purpose) -> dict[str, Any]:
    """``model``'s JSON dump less what does not count for ``purpose``, at every depth."""
    return _prune(model, model.model_dump(mode="json"), purpose)


def _prune(model: BaseModel, dumped: dict[str, Any], purpose: Purpose) -> dict[str, Any]:
    kind = type(model)
    body: dict[str, Any] = {}
    for name, value in dumped.items():
        identity = identity_of(kind, name)
        if identity is None:
            raise TypeError(f"{kind.__name__}.{name} declares no identity (content, ...)")
        if identity in _LEFT_OUT[purpose] or (identity == "later" and value is None):
            continue
        body[name] = _prune_value(getattr(model, name), value, purpose)
    return body


def _prune_value(value: Any, dumped: Any, purpose: Purpose) -> Any:
    """A field's dump, with any recipe model inside it (a mapping's values, a list's
    items) pruned the same way."""
    if isinstance(value, BaseModel):
        return _prune(value, dumped, purpose)
    if isinstance(value, dict):
        return {k: _prune_value(value[k], dumped[k], purpose) for k in value}
    if isinstance(value, list | tuple):
        return [_prune_value(v, d, purpose) for v, d in zip(value, dumped, strict=True)]
    return dumped
