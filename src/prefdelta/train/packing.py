"""Padding-free DPO: every sequence of a batch runs as one packed row, no padding computed.

Why: a DPO batch is its chosen and rejected sequences padded together to the longest of
them, and reasoning traces vary a lot in length, so a large share of the tokens a padded
step computes is padding. TRL 1.16 accepts ``padding_free`` in ``DPOConfig`` but switches
it off with a warning ("temporarily unavailable after a refactor"); prefdelta honours it.

How: TRL computes every log-prob through its fused LM head,
``model(input_ids, attention_mask, labels=..., fused_lm_head=True)``, on right-padded rows.
:func:`pack_sequences` wraps that forward once more: the real tokens of all rows are laid
end to end in one row, ``position_ids`` restart at 0 for each sequence (transformers then
keeps the sequences from attending to each other: flash attention natively, every other
implementation through its packed-sequence mask), each sequence's next-token labels are
passed pre-shifted (``shift_labels``, so no token is scored against the next sequence's
first token), and the per-token outputs are scattered back to the padded layout TRL's
loss code expects. The loss, the metrics and the reference pass are TRL's own, unchanged.

Attention must be one that skips the other sequences' tokens instead of masking them:
``flex_attention`` (ships with torch) or ``flash_attention_2``, on a GPU. ``sdpa`` and
``eager`` give the same numbers but materialise a mask over the whole packed row, so
their cost grows with the square of the batch's total length: fine for small CPU runs.
(On CPU, torch 2.13's inductor fails to compile flex attention's backward, so CPU
training with packing uses ``sdpa``.)
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import types
from typing import Any

logger = logging.getLogger(__name__)

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
    attention = getattr(model.config, "_attn_implementation", None)
    if attention not in SPARSE_ATTENTION and not str(attention).startswith("kernels-"):
        logger.warning(
            "padding_free with attn_implementation=%s attends over the whole packed row, "
            "so attention costs grow with the square of a batch's total tokens; on a GPU "
            "set `attn_implementation: flex_attention` (or flash_attention_2)",
            attention,
        )
    inner = model.forward

    @functools.wraps(inner)
    def _packed_forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        if args or not _packable(kwargs):
            return inner(*args, **kwargs)
        return _forward_packed(inner, **kwargs)

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


def _forward_packed(
    inner: Any, *, input_ids: Any, attention_mask: Any, labels: Any, **kwargs: Any
) -> Any:
    import torch.nn.functional as F

    keep = attention_mask.bool()
    # a sequence's positions count its own real tokens (right padding: 0, 1, 2, ...)
    position_ids = (attention_mask.long().cumsum(dim=1) - 1)[keep].unsqueeze(0)
    # next-token labels per row; a row's last token has none (-100), so no token is
    # scored against the first token of the sequence packed after it
    shift_labels = F.pad(labels[:, 1:], (0, 1), value=-100)[keep].unsqueeze(0)
    out = inner(
        input_ids=input_ids[keep].unsqueeze(0),
        position_ids=position_ids,
        shift_labels=shift_labels,
        **kwargs,
    )
    # back to what the padded call returns: (batch, seq_len - 1), zero where no label
    updates = {
        field.name: _unpack(value, keep)
        for field in dataclasses.fields(out)
        if field.name != "loss"
        and field.name != "aux_loss"
        and (value := getattr(out, field.name)) is not None
    }
    return dataclasses.replace(out, **updates)


def _unpack(packed: Any, keep: Any) -> Any:
    full = packed.new_zeros(keep.shape).masked_scatter(keep, packed[0])
    return full[:, :-1]
