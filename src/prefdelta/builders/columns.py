"""Judge a preference dataset as it stands (pairing strategy ``columns``).

Each row's chosen and rejected sides are read from the recipe's columns: plain texts, or
TRL conversational lists (``[{role, content}, ...]``) whose final turn is the assistant's
answer. The two sides are the ``dataset`` generators ``chosen`` and ``rejected``
(:func:`prefdelta.recipe.schema.column_generators`), so they are stored, judged, resumed
and tabled like any read trace (:mod:`prefdelta.builders.given`); nothing is generated.

The prompt is ``prompts.column`` when the recipe names one (a text, or a conversation),
and otherwise the conversation before the chosen side's final turn (the rejected side's
must be the same). Rows sharing a prompt are that prompt's samples 0, 1, ... in the
shuffled order, so every row is one pair and none is folded away.

The published pairs keep each row's labels. ``label_agrees`` says whether the judge's
aggregate ``delta`` has the label's sign: true for delta > 0, false for delta < 0, and
null for a tie (delta 0) or a pair without a delta (a side the judge did not score, or an
empty side): both are kept and counted apart, never taken for agreement or dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prefdelta.builders.prompts import Prompt, prompt_id, read_prompt_table, require_columns
from prefdelta.recipe import BuildRecipe, RecipeError
from prefdelta.schema import LABEL_COLUMN

TIE = 1e-9  # |delta| below this is a tie, as the pairing counts ties

Messages = tuple[dict[str, str], ...]


def _where(row: int, table: str) -> str:
    return f"row {row} of {table} (after shuffling)"


def _messages(value: Any, field: str, where: str) -> Messages:
    """A conversation cell as ``{role, content}`` messages, each checked."""
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            raise RecipeError(
                [f"{field}: {where}: message {i} is {m!r}; expected {{role, content}}"]
            )
        content = m.get("content")
        if content is not None and not isinstance(content, str):
            raise RecipeError(
                [
                    f"{field}: {where}: message {i}'s content is a {type(content).__name__}; "
                    "expected text"
                ]
            )
        out.append({"role": m["role"], "content": content or ""})
    return tuple(out)


def read_side(value: Any, field: str, where: str) -> tuple[Messages | None, str]:
    """One side of a pair: the turns before its answer (None for a plain text) and the
    answer's text. A missing side is an empty answer, kept and counted by the build."""
    if value is None:
        return None, ""
    if isinstance(value, str):
        return None, value
    if not isinstance(value, list | tuple):
        raise RecipeError(
            [
                f"{field}: {where} holds {type(value).__name__} {value!r}; expected a text "
                "or a conversation (a list of {role, content} messages)"
            ]
        )
    turns = _messages(value, field, where)
    if not turns:
        return (), ""
    if turns[-1]["role"] != "assistant":
        raise RecipeError(
            [
                f"{field}: {where}: the conversation's last turn is {turns[-1]['role']!r}, not "
                "'assistant'; each side must end with the assistant's answer"
            ]
        )
    return turns[:-1], turns[-1]["content"]


def prompt_text(messages: Messages) -> str:
    """What the judge reads as the problem: a lone user turn as it is, else each turn as
    ``role: content``, one paragraph each."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


def _prompt(
    row: Mapping[str, Any], column: str | None, sides: Sequence[Messages | None], where: str
) -> Messages:
    if column is not None:
        value = row[column]
        if isinstance(value, str) and value.strip():
            return ({"role": "user", "content": value},)
        if isinstance(value, list | tuple) and value:
            return _messages(value, "prompts.column", where)
        raise RecipeError([f"prompts.column: {where} has no prompt in {column!r}: {value!r}"])
    chosen, rejected = sides
    if chosen is not None and rejected is not None and chosen != rejected:
        raise RecipeError(
            [
                f"pairing: {where}: the chosen and rejected conversations differ before "
                "their final turn, so they answer different prompts; name the prompt's "
                "column in prompts.column, or fix the row"
            ]
        )
    turns = chosen if chosen is not None else rejected
    if not turns:
        raise RecipeError(
            [
                f"pairing.chosen: {where} holds no turn before the assistant's answer, so "
                "there is no prompt to take from it; name the prompt's column in "
                "prompts.column"
            ]
        )
    return turns


def load_pair_prompts(recipe: BuildRecipe) -> tuple[list[Prompt], int]:
    """The prompts of a preference dataset's pairs, each carrying its rows' chosen and
    rejected answers (a list, one per row) in the columns the two sides' generators read.
    ``limit`` counts prompts; no row is folded (the count of folded prompts is 0)."""
    cfg, pairing = recipe.prompts, recipe.pairing
    columns = {"pairing.chosen": pairing.chosen or "", "pairing.rejected": pairing.rejected[0]}
    ds, where = read_prompt_table(cfg, recipe.base_dir)
    require_columns(ds, where, columns)
    ds = ds.shuffle(seed=cfg.seed)
    by_id: dict[str, dict[str, Any]] = {}
    for index, row in enumerate(ds):
        at = _where(index, where)
        sides = [read_side(row[c], f, at) for f, c in columns.items()]
        messages = _prompt(row, cfg.column, [s[0] for s in sides], at)
        text = prompt_text(messages)
        if not text.strip():
            raise RecipeError([f"prompts: {at} has an empty prompt"])
        pid = prompt_id(text)
        if pid not in by_id:
            if cfg.limit is not None and len(by_id) == cfg.limit:
                continue  # a later row of a prompt already taken is still read
            ref = row[cfg.reference_column] if cfg.reference_column else None
            by_id[pid] = {"text": text, "messages": messages, "ref": ref, "answers": ([], [])}
        for answers, (_, answer) in zip(by_id[pid]["answers"], sides, strict=True):
            answers.append(answer)
    if not by_id:
        raise RecipeError([f"prompts: {where} has no rows"])
    prompts = [
        Prompt(
            pid,
            p["text"],
            None if p["ref"] is None else str(p["ref"]),
            dict(zip(columns.values(), p["answers"], strict=True)),
            p["messages"],
        )
        for pid, p in by_id.items()
    ]
    return prompts, 0


def label_pairs(pairs: list[dict[str, Any]], prompts: Sequence[Prompt]) -> None:
    """Give each pair its prompt as the dataset's conversation and its ``label_agrees``."""
    conversations = {p.prompt_id: p.messages for p in prompts if p.messages is not None}
    for pair in pairs:
        if pair["prompt_id"] in conversations:
            pair["prompt"] = [dict(m) for m in conversations[pair["prompt_id"]]]
        delta = pair["delta"]
        pair[LABEL_COLUMN] = None if delta is None or abs(delta) < TIE else delta > 0


def label_agreement(pairs: Sequence[Mapping[str, Any]], dims: Sequence[str]) -> dict[str, Any]:
    """How the judge's deltas stand to the dataset's labels: pairs it agrees with (delta >
    0), disagrees with (< 0), ties and pairs without a delta; and per dimension, the pairs
    whose ``delta_<dimension>`` is below 0."""
    deltas = [p["delta"] for p in pairs]
    return {
        "column": LABEL_COLUMN,
        "by": "delta",
        "pairs": len(pairs),
        "agree": sum(d is not None and d >= TIE for d in deltas),
        "disagree": sum(d is not None and d <= -TIE for d in deltas),
        "ties": sum(d is not None and abs(d) < TIE for d in deltas),
        "unscored": sum(d is None for d in deltas),
        "disagree_by_dimension": {
            d: sum(p[f"delta_{d}"] is not None and p[f"delta_{d}"] <= -TIE for p in pairs)
            for d in dims
        },
    }


def agreement_line(agreement: Mapping[str, Any]) -> str:
    """The terminal's and the card's words for :func:`label_agreement`."""
    a = agreement
    return (
        f"original labels: the judge's delta agrees with {a['agree']} of {a['pairs']} pairs "
        f"and disagrees with {a['disagree']} ({a['column']} false); {a['ties']} ties and "
        f"{a['unscored']} pairs without a delta ({a['column']} null), all kept"
    )
