"""Every key of the build's result store, in one place: what makes two results the same.

A key hashes exactly what determines a result; fields that only change how a result is
fetched (batch sizes, concurrency, URLs, keys, timeouts and retries) are left out, so
tuning them reuses everything. Which fields those are, each recipe field declares
(:mod:`prefdelta.recipe.identity`). Change a rule here and every build recomputes what it
touches, and nothing else. Sampling seeds derive from keys here too (:func:`row_seed`), so a
resumed build draws what the uninterrupted one did.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from prefdelta.recipe import GeneratorConfig, JudgeConfig
from prefdelta.recipe.identity import fields_with, identity_body
from prefdelta.recipe.judge import REASONING_FIELDS

__all__ = [
    "GENERATOR_OPERATIONAL",
    "JUDGE_OPERATIONAL",
    "content_key",
    "generator_fingerprint",
    "judge_fingerprint",
    "judged_ref",
    "judgment_key",
    "pair_id",
    "row_seed",
    "trace_key",
    "trace_keyer",
]

# What a key leaves out is what each field declares (prefdelta.recipe.identity): these are
# derived from the declarations, never listed here.
# Generator fields that change how a trace is fetched, never what it says.
GENERATOR_OPERATIONAL = fields_with(GeneratorConfig, "operational", "outside")
# Judge fields likewise, and the template's file name: its text is part of the key.
JUDGE_OPERATIONAL = fields_with(JudgeConfig, "operational", "outside") | {"template"}


def content_key(*parts: Any) -> str:
    """sha256 of the canonical JSON of ``parts``: equal inputs, equal key."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def generator_fingerprint(config: GeneratorConfig) -> dict[str, Any]:
    """What changes a trace: the generator's fields that count toward a key, at any depth
    (an option added later counts only when set)."""
    return identity_body(config, "key")


def trace_key(config: GeneratorConfig, prompt: str, sample: int) -> str:
    """Key of one trace: generator config + prompt + sample index."""
    return trace_keyer(config)(prompt, sample)


def trace_keyer(config: GeneratorConfig) -> Callable[[str, int], str]:
    """:func:`trace_key` for many traces of one generator: its fingerprint, which costs
    more than the hash, is worked out once."""
    fingerprint = generator_fingerprint(config)
    return lambda prompt, sample: content_key("generation", fingerprint, prompt, sample)


def judge_fingerprint(config: JudgeConfig, template: str) -> str:
    """What changes a judgment: the judge's config and the template it is asked with.

    ``reads`` (what the judge reads of a trace) is left out here because its effect is
    keyed exactly: :func:`judgment_key` hashes the text the judge reads, so a choice that
    leaves a trace's text as it was (``reads: whole``) reuses its judgment, and one that
    changes it (the reasoning only, a cut) re-judges that trace."""
    body = identity_body(config, "key")  # an option added later counts only when set
    body.pop("template", None)  # where the template file is; its text is keyed below
    body.pop("reads", None)  # what it selects of each trace is keyed by judgment_key
    # reasoning counts as decided (`auto` resolved), not as written: a judge that reasons
    # judges differently, and one told `off` judges as one that never heard of it
    for name in REASONING_FIELDS:
        body.pop(name, None)
    thinking = config.thinking
    if thinking is not None:
        body["thinking"] = {"budget": thinking.budget, "parser": thinking.parser}
    return content_key("judge", body, hashlib.sha256(template.encode()).hexdigest())


def judgment_key(fingerprint: str, prompt: str, trace: str, reference: str | None = None) -> str:
    """Key of one judgment; ``trace``: the text the judge reads of the trace; ``reference``:
    the reference answer the judge was shown (None: not shown, the key it always had)."""
    if reference is None:
        return content_key("judgment", fingerprint, prompt, trace)
    return content_key("judgment", fingerprint, prompt, trace, reference)


def judged_ref(fingerprint: str, trace_key: str) -> str:
    """Tag on a stored judgment naming the trace it belongs to, for progress counts."""
    return content_key("judged", fingerprint, trace_key)


def pair_id(chosen_trace_key: str, rejected_trace_key: str) -> str:
    """A pair's id: its two traces, in order."""
    return content_key("pair", chosen_trace_key, rejected_trace_key)[:32]


def row_seed(key: str, index: int = 0) -> int:
    """A 63-bit seed for sequence ``index`` of the row named by ``key`` (a trace key, or a
    hash of what was asked): the same row draws the same numbers in every run."""
    digest = hashlib.sha256(f"{key}#{index}".encode()).hexdigest()
    return int(digest[:16], 16) >> 1
