"""DPO training throughput: prefdelta's trainer vs plain TRL ``DPOTrainer``, single run and sweep.

For a GPU machine (H100/H200). Same model and data as the plain-TRL DPO baseline whose
H100 numbers the training goals quote: a random-initialised Qwen2.5-0.5B-shaped
model built from its config (no download), bf16; a word-level tokenizer built in-process;
synthetic pairs with a 256-word prompt and 128..768-word completions (one word, one
token), ``max_length`` 1024. Variants, each at per-device batch 8 and 32:

- ``trl_default``: ``DPOTrainer`` with a reference model (the anchor's default run);
- ``trl_precompute``: the same with TRL's ``precompute_ref_log_probs`` (batch 32);
- ``prefdelta``: :class:`prefdelta.train.dpo.PrefDeltaDPOTrainer` as ``prefdelta train``
  builds it: reference log-probs from the shared cache (``precompute_ref_log_probs``, no
  reference model in memory) and length-grouped batches;
- ``prefdelta_packed``: the same with ``padding_free=True`` (:mod:`prefdelta.train.packing`)
  and ``flex_attention`` on the GPU, so each batch runs as one row with no padding at all
  (``sdpa`` on CPU, where flex attention's backward does not compile: rows no wider than
  the padded batch, first-fit decreasing);
- ``prefdelta_packed_compile`` (not run by default): the same under ``torch_compile``.

Measured: real (non-padding) tokens per second over the steady steps (the attention
masks of the batches actually trained on, steps ``WARM`` to the last), and MFU against
989 TFLOP/s (H100 SXM dense bf16), counting 6N FLOPs per token for training plus 2N for
a reference forward inside the step (``trl_default`` only), as the anchor does. Setup
(tokenizing, the reference pass) is reported apart. The sweep: four runs on overlapping
subsets of one pool (top 30%/50% by a synthetic delta, random 30%/50%), one epoch each,
total wall time including setup: TRL recomputes the reference pass per subset, prefdelta
reuses what an earlier run computed.

Run: ``python bench/train_throughput.py`` (GPU), or ``--device cpu --tiny`` for a
minute-long smoke test of the whole script on a tiny model. Prints one JSON line per
measurement, then a table with ratios; exits 0.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Baselines measured on an H100 with TRL 1.16 by the anchor script (real tokens/s, MFU).
ANCHOR = {
    ("trl_default", 8): (23_000, 0.09),
    ("trl_default", 32): (35_000, 0.14),
    ("trl_precompute", 8): (44_000, 0.13),
    ("trl_precompute", 32): (51_000, 0.15),
}
PEAK_FLOPS = 989e12
# attention of the packed variant per device (``--packed-attention`` sets the GPU's)
PACKED_ATTENTION = {"cuda": "flex_attention", "cpu": "sdpa"}


@dataclass(frozen=True)
class Shape:
    """Model and data sizes: the anchor's, or a tiny CPU smoke version."""

    vocab_words: int
    prompt_words: int
    completion_words: tuple[int, int]
    max_length: int
    steps: int
    warm: int
    batches: tuple[int, ...]
    pool_batches: int  # sweep pool size, in batches of the run's batch size
    model: dict[str, Any]


GPU = Shape(
    vocab_words=30_000,
    prompt_words=256,
    completion_words=(128, 768),
    max_length=1024,
    steps=40,
    warm=8,
    batches=(8, 32),
    pool_batches=40,
    model=dict(
        vocab_size=151_936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    ),
)
TINY = Shape(
    vocab_words=500,
    prompt_words=16,
    completion_words=(8, 48),
    max_length=64,
    steps=6,
    warm=2,
    batches=(2, 4),
    pool_batches=8,
    model=dict(
        vocab_size=600,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
    ),
)


def tokenizer(shape: Shape) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<pad>", "<s>", "</s>"] + [f"w{i}" for i in range(shape.vocab_words)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
    )


def pairs(shape: Shape, n: int, seed: int = 0) -> Any:
    """The anchor's rows, plus an id and a synthetic delta for the sweep's top-k selections."""
    from datasets import Dataset

    r = random.Random(seed)

    def words(k: int) -> str:
        return " ".join(f"w{r.randrange(shape.vocab_words)}" for _ in range(k))

    lo, hi = shape.completion_words
    rows = [
        {
            "pair_id": f"p{i:06d}",
            "prompt": words(shape.prompt_words),
            "chosen": " " + words(r.randint(lo, hi)),
            "rejected": " " + words(r.randint(lo, hi)),
            "delta": r.uniform(-4, 4),
        }
        for i in range(n)
    ]
    return Dataset.from_list(rows)


def build_model(shape: Shape, device: str, attention: str = "sdpa") -> Any:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(**shape.model)
    config._attn_implementation = attention
    model = Qwen2ForCausalLM(config)
    return model.to(torch.bfloat16) if device == "cuda" else model


class StepTimer:
    """Callback: wall time at each step end (after a device sync)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.t: dict[int, float] = {}

    def __call__(self) -> Any:
        from transformers import TrainerCallback

        timer = self

        class _CB(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                if timer.device == "cuda":
                    import torch

                    torch.cuda.synchronize()
                timer.t[state.global_step] = time.perf_counter()

        return _CB()


def count_tokens(trainer: Any) -> list[Any]:
    """Record each training batch's real tokens (the attention mask), without a sync."""
    seen: list[Any] = []
    original = trainer.training_step

    def step(model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(inputs["attention_mask"].sum())
        return original(model, inputs, *args, **kwargs)

    trainer.training_step = step
    return seen


def make_trainer(
    variant: str, shape: Shape, device: str, batch: int, dataset: Any, steps: int, cache: Path
) -> tuple[Any, float]:
    """A trainer for one variant; returns it and the setup time (tokenize + reference pass)."""
    from trl import DPOConfig, DPOTrainer

    from prefdelta.train.dpo import PrefDeltaDPOTrainer
    from prefdelta.train.ref_cache import RefCacheLocation

    gpu = device == "cuda"
    packed = variant.startswith("prefdelta_packed")
    model = build_model(shape, device, PACKED_ATTENTION[device] if packed else "sdpa")
    kw: dict[str, Any] = dict(
        output_dir=tempfile.mkdtemp(prefix=f"bench-{variant}-"),
        per_device_train_batch_size=batch,
        max_steps=steps,
        bf16=gpu,
        use_cpu=not gpu,
        max_length=shape.max_length,
        learning_rate=1e-6,
        logging_steps=10,
        report_to=[],
        save_strategy="no",
        dataloader_num_workers=2 if gpu else 0,
        dataloader_pin_memory=gpu,
    )
    if variant != "trl_default":
        kw.update(precompute_ref_log_probs=True, precompute_ref_batch_size=32)
    if packed:
        kw.update(padding_free=True)
    if variant.endswith("_compile"):
        kw.update(torch_compile=True)
    args = DPOConfig(**kw)
    tok = tokenizer(shape)
    t0 = time.perf_counter()
    if variant.startswith("prefdelta"):
        trainer = PrefDeltaDPOTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=tok,
            ref_cache=RefCacheLocation(cache, "bench", "synthetic-v1"),
            length_grouping=True,
        )
    else:  # the anchor passes an explicit reference copy in both TRL variants
        trainer = DPOTrainer(
            model=model,
            ref_model=copy.deepcopy(model).eval(),
            args=args,
            train_dataset=dataset,
            processing_class=tok,
        )
    if gpu:
        import torch

        torch.cuda.synchronize()
    return trainer, time.perf_counter() - t0


def n_params(shape: Shape) -> int:
    return sum(p.numel() for p in build_model(shape, "cpu").parameters())


def single_run(variant: str, shape: Shape, device: str, batch: int, params: int) -> dict[str, Any]:
    """The anchor's measurement: steady-state real tokens/s and MFU of one run."""
    dataset = pairs(shape, batch * shape.steps)
    cache = Path(tempfile.mkdtemp(prefix="bench-cache-"))  # a first run: nothing cached
    trainer, setup = make_trainer(variant, shape, device, batch, dataset, shape.steps, cache)
    timer = StepTimer(device)
    trainer.add_callback(timer())
    tokens = count_tokens(trainer)
    t0 = time.perf_counter()
    trainer.train()
    train_wall = time.perf_counter() - t0
    real = [int(t) for t in tokens]
    a, b = shape.warm, max(timer.t)
    tps = sum(real[a:b]) / (timer.t[b] - timer.t[a])
    flops_per_token = (8 if variant == "trl_default" else 6) * params
    out = dict(
        kind="single",
        variant=variant,
        batch=batch,
        device=_device_name(device),
        attention=trainer.model.config._attn_implementation,
        params=params,
        real_tokens_per_s=round(tps),
        mfu=round(flops_per_token * tps / PEAK_FLOPS, 4),
        steady_step_s=round((timer.t[b] - timer.t[a]) / (b - a), 4),
        setup_s=round(setup, 2),
        train_wall_s=round(train_wall, 2),
        end_to_end_tokens_per_s=round(sum(real) / (setup + train_wall)),
        peak_mem_gb=_peak_mem(device),
    )
    _cleanup(device, trainer)
    return out


def sweep(variant: str, shape: Shape, device: str, batch: int) -> dict[str, Any]:
    """Four filtered runs over one pool, one epoch each; wall time includes every setup."""
    pool = pairs(shape, batch * shape.pool_batches, seed=1)
    ranked = sorted(range(len(pool)), key=lambda i: -pool[i]["delta"])
    rng = random.Random(0)
    subsets = {
        "top30": sorted(ranked[: math.ceil(0.3 * len(pool))]),
        "top50": sorted(ranked[: math.ceil(0.5 * len(pool))]),
        "random30": sorted(rng.sample(range(len(pool)), math.ceil(0.3 * len(pool)))),
        "random50": sorted(rng.sample(range(len(pool)), math.ceil(0.5 * len(pool)))),
    }
    cache = Path(tempfile.mkdtemp(prefix="bench-sweep-cache-"))  # shared by the four runs
    total_wall, total_tokens, setups = 0.0, 0, []
    for indices in subsets.values():
        subset = pool.select(indices)
        steps = max(1, len(subset) // batch)
        t0 = time.perf_counter()
        trainer, setup = make_trainer(variant, shape, device, batch, subset, steps, cache)
        tokens = count_tokens(trainer)
        trainer.train()
        total_wall += time.perf_counter() - t0
        total_tokens += sum(int(t) for t in tokens)
        setups.append(round(setup, 2))
        _cleanup(device, trainer)
    return dict(
        kind="sweep",
        variant=variant,
        batch=batch,
        runs=len(subsets),
        pool_pairs=len(pool),
        wall_s=round(total_wall, 2),
        setup_s=setups,
        real_tokens=total_tokens,
        real_tokens_per_s=round(total_tokens / total_wall),
    )


def _device_name(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    return "cpu"


def _peak_mem(device: str) -> float | None:
    if device != "cuda":
        return None
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 1)


def _cleanup(device: str, trainer: Any) -> None:
    import gc

    del trainer
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def report(results: list[dict[str, Any]], device: str) -> None:
    """A table per measurement kind, with prefdelta's ratios to each TRL variant."""
    print()
    print(
        f"{'kind':7s} {'variant':17s} {'batch':>5s} {'real tok/s':>11s} {'MFU':>6s} "
        f"{'setup s':>8s} {'wall s':>8s}"
    )
    for r in results:
        mfu = f"{r['mfu']:.3f}" if "mfu" in r else "-"
        setup = r["setup_s"] if isinstance(r["setup_s"], float) else sum(r["setup_s"])
        wall = r.get("train_wall_s", r.get("wall_s"))
        print(
            f"{r['kind']:7s} {r['variant']:17s} {r['batch']:>5d} {r['real_tokens_per_s']:>11,d} "
            f"{mfu:>6s} {setup:>8.1f} {wall:>8.1f}"
        )
    print()
    index = {(r["kind"], r["variant"], r["batch"]): r for r in results}
    for (kind, variant, batch), r in sorted(index.items()):
        if not variant.startswith("prefdelta"):
            continue
        for base in ("trl_default", "trl_precompute"):
            other = index.get((kind, base, batch))
            if other:
                ratio = r["real_tokens_per_s"] / other["real_tokens_per_s"]
                what = "steady real tok/s" if kind == "single" else "sweep tok/s incl. setup"
                print(f"{kind} batch {batch}: {variant} / {base} = {ratio:.2f}x ({what})")
            quoted = ANCHOR.get((base, batch))
            if kind == "single" and quoted and device == "cuda":
                print(
                    f"  vs the anchor's H100 {base} at batch {batch} ({quoted[0]:,} tok/s, "
                    f"MFU {quoted[1]:.2f}): {r['real_tokens_per_s'] / quoted[0]:.2f}x"
                )


def _guarded(measure: Any, variant: str, *args: Any) -> list[dict[str, Any]]:
    """One measurement, printed as a JSON line; a variant that fails is reported, not fatal."""
    try:
        result = measure(variant, *args)
    except Exception as exc:  # one GPU window: the other variants must still run
        import traceback

        traceback.print_exc()
        print(json.dumps({"variant": variant, "error": f"{type(exc).__name__}: {exc}"[:500]}))
        return []
    print(json.dumps(result), flush=True)
    return [result]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny model and data (smoke test)")
    parser.add_argument("--batches", type=int, nargs="+", help="per-device batch sizes")
    parser.add_argument("--steps", type=int, help="steps per single run")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["trl_default", "trl_precompute", "prefdelta", "prefdelta_packed"],
    )
    parser.add_argument("--no-sweep", action="store_true", help="single runs only")
    parser.add_argument(
        "--packed-attention",
        default=PACKED_ATTENTION["cuda"],
        help="GPU attention of prefdelta_packed: flex_attention (one row per batch), "
        "flash_attention_2 (one row; needs flash-attn), or sdpa (rows no wider than the batch)",
    )
    parser.add_argument(
        "--random-fingerprints",
        action="store_true",
        help="as the anchor: random datasets fingerprints (where dill cannot hash pyarrow types)",
    )
    opts = parser.parse_args(argv)
    if opts.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print(
                "no CUDA device: run with --device cpu --tiny for the smoke test", file=sys.stderr
            )
            return 0
    PACKED_ATTENTION["cuda"] = opts.packed_attention
    shape = TINY if opts.tiny else GPU
    if opts.steps:
        shape = Shape(**{**shape.__dict__, "steps": opts.steps})
    if opts.random_fingerprints:
        import uuid

        import datasets.fingerprint as fp

        fp.Hasher.hash = classmethod(lambda cls, value: uuid.uuid4().hex)  # type: ignore[method-assign]
    import datasets

    datasets.disable_progress_bars()
    params = n_params(shape)
    results = []
    for batch in opts.batches or shape.batches:
        for variant in opts.variants:
            results += _guarded(single_run, variant, shape, opts.device, batch, params)
        if not opts.no_sweep:
            for variant in opts.variants:
                results += _guarded(sweep, variant, shape, opts.device, batch)
    report(results, opts.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
