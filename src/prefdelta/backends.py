"""The backends a recipe can name, and the one table of what each one is.

Every rule that depends on the kind of backend (which recipe fields apply, which
generators share a loaded model, which split the CPU cores, whose tokenizer is at hand)
reads :data:`TRAITS` instead of spelling a list of names. A new backend is one line in
:data:`Backend`, one row here, and its LLM module under :mod:`prefdelta.builders.llms`.

This module is at the bottom of the package: it imports nothing from prefdelta.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["TRAITS", "Backend", "BackendTraits", "calls_model", "is_api", "is_local", "traits_of"]

Backend = Literal["transformers", "gguf", "vllm", "openai", "inference-endpoints", "dataset"]


@dataclass(frozen=True)
class BackendTraits:
    """What a backend is, as the build's rules need to know it."""

    local: bool
    """transformers runs the model in the build's own processes: its CPU threads are ours
    to split between steps, and its tokenizer and context length are at hand."""
    api: bool
    """A server we call: the recipe may give ``base_url``/``api_key``, and requests have a
    timeout."""
    shares_loaded_model: bool
    """Generators of the same model share one step and one loaded copy (API generators get
    a step each, so their requests overlap)."""
    needs_file: bool
    """The model is one file (a ``.gguf``), not a folder or a Hub id."""
    calls_model: bool = True
    """The build calls a model for this backend's traces. ``dataset`` calls nothing: its
    traces are a column of the prompts table, and its ``model`` only names what wrote them
    (no model to load or find, no request, no timeout, no concurrency, no cost)."""


TRAITS: dict[Backend, BackendTraits] = {
    "transformers": BackendTraits(
        local=True, api=False, shares_loaded_model=True, needs_file=False
    ),
    "gguf": BackendTraits(local=True, api=False, shares_loaded_model=True, needs_file=True),
    "vllm": BackendTraits(local=False, api=False, shares_loaded_model=True, needs_file=False),
    "openai": BackendTraits(local=False, api=True, shares_loaded_model=False, needs_file=False),
    "inference-endpoints": BackendTraits(
        local=False, api=True, shares_loaded_model=False, needs_file=False
    ),
    "dataset": BackendTraits(
        local=False, api=False, shares_loaded_model=False, needs_file=False, calls_model=False
    ),
}


def traits_of(backend: object) -> BackendTraits | None:
    """The traits of ``backend`` as a recipe file spells it, or None when it names no
    backend (the recipe's validation reports that)."""
    return TRAITS.get(backend) if isinstance(backend, str) else None  # type: ignore[call-overload]


def is_local(backend: Backend) -> bool:
    """transformers runs ``backend``'s model in this build's processes (gguf included)."""
    return TRAITS[backend].local


def is_api(backend: Backend) -> bool:
    """``backend`` is a server we call over HTTP."""
    return TRAITS[backend].api


def calls_model(backend: Backend) -> bool:
    """The build calls a model for ``backend``'s traces (not so for ``dataset``)."""
    return TRAITS[backend].calls_model
