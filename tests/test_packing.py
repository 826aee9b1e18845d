"""Padding-free DPO: a packed batch computes what the padded batch computes, minus the padding.

TRL 1.16 switches ``padding_free`` off for DPO; prefdelta packs each batch's sequences
end to end under TRL's fused LM head (one row, or rows no wider than the batch for dense
attention). These tests hold the packed forward to the padded one (values and gradients,
sequences of different lengths, a sequence that fills the row, both row layouts), and
whole DPO runs with ``padding_free: true`` (full and LoRA) to the padded runs' losses and
stored reference log-probs.
"""

from __future__ import annotations

import copy
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from trl import DPOConfig, ModelConfig

from prefdelta.push import publish_build
from prefdelta.train import dpo
from prefdelta.train.configs import DataArguments, TrainConfigError
from prefdelta.train.data import dataset_source
from prefdelta.train.packing import pack_sequences, plan_rows
from prefdelta.train.ref_cache import RefCacheLocation
from support.build_fixtures import make_build
from support.model_fixtures import tiny_model_dir  # noqa: F401  (a fixture)
from support.train_fixtures import dpo_config

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


def _fused_model(path: Path, attention: str = "sdpa") -> Any:
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    model = AutoModelForCausalLM.from_pretrained(str(path), attn_implementation=attention)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
    return model


def _padded_batch(lengths: list[int], prompt: int, vocab: int, seed: int = 0) -> dict[str, Any]:
    """Right-padded rows as TRL's DPO collator makes them: prompt, completion, padding."""
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    completion = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(3, vocab, (n,), generator=gen)
        mask[row, :n] = 1
        completion[row, prompt:n] = 1
    labels = ids.masked_fill(completion == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "completion": completion}


def test_rows_are_planned_first_fit_decreasing_or_as_one_row() -> None:
    # longest first: 9 -> row 0, 7 -> row 1, 5 -> row 2, 3 after the 7, 2 after the 5
    assert plan_rows([5, 9, 3, 7, 2], 10) == ([2, 0, 1, 1, 2], [0, 0, 7, 0, 5], 10)
    assert plan_rows([5, 9, 3], None) == ([0, 0, 0], [0, 5, 14], 17)
    assert plan_rows([4, 4, 4, 4], 8) == ([0, 0, 1, 1], [0, 4, 0, 4], 8)


@pytest.mark.parametrize(
    ("attention", "one_row"), [("sdpa", False), ("eager", False), ("sdpa", True)]
)
def test_packed_forward_matches_the_padded_one_in_values_and_gradients(
    tiny_model_dir: Path,  # noqa: F811
    attention: str,
    one_row: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefdelta.train import packing

    if one_row:  # as flex/flash attention get it; sdpa computes the same, only slower
        monkeypatch.setattr(packing, "SPARSE_ATTENTION", (attention,))
    padded = _fused_model(tiny_model_dir, attention)
    packed = copy.deepcopy(padded)
    assert pack_sequences(packed) is True
    assert pack_sequences(packed) is False  # once only
    # rows of 23 (dense attention): the 23 alone, the 17 with the 5 after it, the 9
    batch = _padded_batch([17, 9, 23, 5], prompt=4, vocab=padded.config.vocab_size)
    kwargs = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}

    want = padded(**kwargs, use_cache=False, fused_lm_head=True)
    got = packed(**kwargs, use_cache=False, fused_lm_head=True)

    # same shape as the padded call: (batch, seq_len - 1), zero where a token has no label
    assert got.log_probs.shape == want.log_probs.shape == (4, 22)
    for name in ("log_probs", "entropy", "mean_logits"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), atol=1e-5, rtol=1e-5)
    assert torch.equal(got.is_top1, want.is_top1)
    assert torch.equal(got.label_mask, want.label_mask)
    torch.testing.assert_close(got.loss, want.loss)
    # the scored tokens are exactly the completions' (a row's last token scores nothing)
    assert int(got.label_mask.sum()) == int(batch["completion"][:, 1:].sum())

    want.log_probs.sum().backward()
    got.log_probs.sum().backward()
    for (name, a), (_, b) in zip(padded.named_parameters(), packed.named_parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_packing_leaves_other_calls_alone(tiny_model_dir: Path) -> None:  # noqa: F811
    model = _fused_model(tiny_model_dir)
    reference = copy.deepcopy(model)
    pack_sequences(model)
    ids = torch.tensor([[5, 6, 7, 8]])
    # plain forward (generation path): logits, as before
    torch.testing.assert_close(model(input_ids=ids).logits, reference(input_ids=ids).logits)
    # pre-shifted labels (sequence parallelism) are not repacked
    shift = torch.tensor([[6, 7, 8, -100]])
    got = model(input_ids=ids, shift_labels=shift, fused_lm_head=True, use_cache=False)
    want = reference(input_ids=ids, shift_labels=shift, fused_lm_head=True, use_cache=False)
    torch.testing.assert_close(got.log_probs, want.log_probs)


# --------------------------------------------------------------------------- DPO runs


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("packing-data")
    build = make_build(root / "build", n_prompts=16, seed=5)
    publish_build(build, root / "published")
    return root / "published"


def _stored_ref_logps(run: Path) -> dict[bytes, float]:
    """Every reference log-prob a run stored for its copy of the dataset."""
    import pyarrow.parquet as pq

    out: dict[bytes, float] = {}
    root = RefCacheLocation.for_dataset(dataset_source(str(run / "data"), None)).root
    for shard in root.rglob("*.parquet"):
        table = pq.read_table(shard)
        out.update(zip(table["key"].to_pylist(), table["logp"].to_pylist(), strict=True))
    return out


def _run(
    published: Path, model_dir: Path, out: Path, model: dict[str, Any] | None = None, **over: Any
) -> Any:
    data = out / "data"
    shutil.copytree(published, data)  # each run computes its own reference log-probs
    config = dpo_config(out / "model", **over)
    args = DataArguments(dataset=str(data), length_grouping=False)
    return dpo.main(args, config, ModelConfig(model_name_or_path=str(model_dir), **(model or {})))


@pytest.fixture
def packed_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many packed forwards ran, with gradients (training) and without (reference)."""
    from prefdelta.train import packing

    calls = {"grad": 0, "no_grad": 0}
    original = packing._forward_packed

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls["grad" if torch.is_grad_enabled() else "no_grad"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(packing, "_forward_packed", counting)
    return calls


def test_padding_free_dpo_trains_to_the_same_losses_as_padded(
    published: Path,
    tiny_model_dir: Path,  # noqa: F811
    tmp_path: Path,
    packed_calls: dict[str, int],
) -> None:
    calls = packed_calls
    padded = _run(published, tiny_model_dir, tmp_path / "padded")
    assert calls == {"grad": 0, "no_grad": 0}
    packed = _run(published, tiny_model_dir, tmp_path / "packed", padding_free=True)
    # every training step and every reference batch ran packed
    assert calls["grad"] == 4 and calls["no_grad"] >= 1

    assert len(packed.losses) == len(padded.losses) == 4
    assert packed.losses[0] == pytest.approx(math.log(2), abs=1e-3)  # policy == reference
    assert packed.losses == pytest.approx(padded.losses, rel=1e-4, abs=1e-5)
    assert packed.losses[-1] < packed.losses[0] - 0.01
    # the reference pass ran packed as well and stored the same values
    assert packed.ref_cache["sequences_computed"] == padded.ref_cache["sequences_computed"] > 0
    want, got = _stored_ref_logps(tmp_path / "padded"), _stored_ref_logps(tmp_path / "packed")
    assert got.keys() == want.keys() and len(got) > 0
    assert [got[k] for k in want] == pytest.approx(list(want.values()), rel=1e-5, abs=1e-4)
    # the card records the option as it ran, not as TRL 1.16 would have reset it
    card = (packed.output_dir / "README.md").read_text()
    assert "padding_free: true" in card


def test_padding_free_dpo_with_lora_matches_padded(
    published: Path,
    tiny_model_dir: Path,  # noqa: F811
    tmp_path: Path,
    packed_calls: dict[str, int],
) -> None:
    # LoRA: the packing sits under PEFT's wrapper; the reference is the adapter disabled
    lora = dict(use_peft=True, lora_r=4, lora_alpha=8, lora_target_modules=["q_proj", "v_proj"])
    padded = _run(published, tiny_model_dir, tmp_path / "padded", model=lora)
    assert packed_calls == {"grad": 0, "no_grad": 0}
    packed = _run(published, tiny_model_dir, tmp_path / "packed", model=lora, padding_free=True)
    assert packed_calls["grad"] == 4 and packed_calls["no_grad"] >= 1
    assert packed.losses == pytest.approx(padded.losses, rel=1e-4, abs=1e-5)
    assert packed.losses[-1] < packed.losses[0]


def test_padding_free_refuses_prompt_learning_peft(
    published: Path,
    tiny_model_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    from peft import PromptTuningConfig

    with pytest.raises(TrainConfigError, match="padding_free: prompt-learning"):
        dpo.PrefDeltaDPOTrainer(
            model=str(tiny_model_dir),
            args=DPOConfig(output_dir=str(tmp_path), use_cpu=True, padding_free=True),
            train_dataset=None,
            peft_config=PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
        )
