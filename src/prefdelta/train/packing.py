"""Padding-free DPO: the sequences of a batch run packed end to end, no padding computed.

Why: a DPO batch is its chosen and rejected sequences padded together to the longest of
them, and reasoning traces vary a lot in length, so a large share of the tokens a padded
step computes is padding. TRL 1.16 accepts ``padding_free`` in ``DPOConfig`` but switches
it off with a warning ("temporarily unavailable after a refactor"); prefdelta honours it.

How: TRL computes every log-prob through its fused LM head,
``model(input_ids, attention_mask, labels=..., fused_lm_head=True)``, on right-padded rows.
:func:`pack_sequences` wraps that forward once more: the real tokens are laid end to end,
``position_ids`` restart at 0 for each sequence (transformers then keeps the sequences
from attending to each other: flash attention natively, every other implementation
through its packed-sequence mask), each sequence's next-token labels are passed
pre-shifted (``shift_labels``, so no token is scored against the next sequence's first
token), and the per-token outputs are scattered back to the padded layout TRL's loss code
expects. The loss, the metrics and the reference pass are TRL's own, unchanged.

How many rows: attention that skips other sequences' tokens (``flex_attention``, which
ships with torch, or ``flash_attention_2``) gets the whole batch as one row, so nothing at
all is padded. ``sdpa`` and ``eager`` are given a dense mask over each row, so their cost
grows with the square of the row: for them the sequences are packed first-fit-decreasing
into rows no wider than the padded batch, which never costs more attention than padding
did and leaves only the rows' tails padded.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from typing import Any

SPARSE_ATTENTION = ("flash_attention_2", "flash_attention_3", "flex_attention")
_MARK = "_prefdelta_packed"


def pack_sequences(model: Any) -> bool:
    """Make ``model``'s fused-LM-head forward padding-free. Returns False if already done.

    ``model`` is the module TRL gave a fused LM head (``add_fused_lm_head``): the base
    model under a PEFT wrapper. Calls without ``fused_lm_head=True`` (generation) and
    calls that are not a padded ``input_ids`` / ``attention_mask`` / ``labels`` batch pass
    through unchanged.
    """
    if getattr(model, _MARK, False):
        return False
    inner = model.forward

    @functools.wraps(inner)
    def _packed_forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        if args or not _packable(kwargs):
            return inner(*args, **kwargs)
        attention = str(getattr(self.config, "_attn_implementation", None))
        one_row = attention in SPARSE_ATTENTION or attention.startswith("kernels-")
        return _forward_packed(inner, one_row=one_row, **kwargs)

    model.forward = types.MethodType(_packed_forward, model)
    setattr(model, _MARK, True)
    return True


def _packable(kwargs: dict[str, Any]) -> bool:
    return (
        kwargs.get("fused_lm_head") is True
        and kwargs.get("input_ids") is not None
        and kwargs.get("attention_mask") is not None
        and kwargs.get("labels") is not None
        and kwargs.get("shift_labels") is None
        and kwargs.get("position_ids") is None
        and kwargs.get("inputs_embeds") is None
    )


def plan_rows(lengths: list[int], width: int | None) -> tuple[list[int], list[int], int]:
    """Where each sequence goes: (row, offset) per sequence, and the row width.

    ``width=None``: one row holding every sequence in order. Otherwise first-fit
    decreasing into rows of ``width`` (no sequence is longer), longest sequences first.
    """
    if width is None:
        offsets, at = [], 0
        for n in lengths:
            offsets.append(at)
            at += n
        return [0] * len(lengths), offsets, max(at, 1)
    rows, offsets = [0] * len(lengths), [0] * len(lengths)
    free: list[int] = []  # room left in each row
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        row = next((r for r, room in enumerate(free) if room >= lengths[i]), len(free))
        if row == len(free):
            free.append(width)
        rows[i], offsets[i] = row, width - free[row]
        free[row] -= lengths[i]
    return rows, offsets, width


def _forward_packed(
    inner: Any,
    *,
    one_row: bool,
    input_ids: Any,
    attention_mask: Any,
    labels: Any,
    **kwargs: Any,
) -> Any:
    import torch
    import torch.nn.functional as F

    keep = attention_mask.bool()
    lengths = keep.sum(dim=1)
    rows, offsets, width = plan_rows(lengths.tolist(), None if one_row else keep.shape[1])
    n_rows = max(rows, default=0) + 1
    # each real token's place in the packed rows (flattened), in the order keep gives them
    device = input_ids.device
    start = torch.tensor(rows, device=device) * width + torch.tensor(offsets, device=device)
    first = torch.cumsum(lengths, 0) - lengths  # index of each sequence's first real token
    step = torch.arange(int(lengths.sum()), device=device) - first.repeat_interleave(lengths)
    dest = start.repeat_interleave(lengths) + step

    def packed(values: Any, fill: int) -> Any:
        out = values.new_full((n_rows * width,), fill)
        out[dest] = values
        return out.view(n_rows, width)

    # positions restart per sequence (right padding: 0, 1, 2, ...); a row's unused tail
    # (dense attention only) comes after its real tokens, so causally none attends to it
    columns = torch.arange(width, device=device).repeat(n_rows)
    position_ids = columns.clone()
    position_ids[dest] = step
    # next-token labels per sequence; its last token has none (-100), so no token is
    # scored against the first token of the sequence packed after it
    shift_labels = F.pad(labels[:, 1:], (0, 1), value=-100)[keep]
    out = inner(
        input_ids=packed(input_ids[keep], 0),
        position_ids=position_ids.view(n_rows, width),
        shift_labels=packed(shift_labels, -100),
        **kwargs,
    )
    # back to what the padded call returns: (batch, seq_len - 1), zero where no label
    updates = {
        field.name: _unpack(value, keep, dest)
        for field in dataclasses.fields(out)
        if field.name != "loss"
        and field.name != "aux_loss"
        and (value := getattr(out, field.name)) is not None
    }
    return dataclasses.replace(out, **updates)


def _unpack(packed: Any, keep: Any, dest: Any) -> Any:
    full = packed.new_zeros(keep.shape).masked_scatter(keep, packed.reshape(-1)[dest])
    return full[:, :-1]
