"""What cutting a vLLM build into distilabel batches costs: a CPU stand-in for the engine.

vLLM's offline ``LLM.generate`` hands all prompts of a call to its scheduler, which keeps up
to ``max_num_seqs`` sequences decoding and admits a queued one whenever one finishes
(continuous batching): within a call no sequence waits for a slower one while prompts are
queued. A call returns when its last sequence is done, and the build's step sends its next
batch only then, so each batch ends with a tail in which fewer and fewer sequences decode.
Decoding is memory-bound: a step costs about the same with 1 or ``max_num_seqs`` running
sequences, so the tail's steps cost as much as full ones.

This stand-in replays that scheduler on token counts (no model, no GPU): each decode step
advances every running sequence by one token; a step's cost is ``1 + alpha * running /
max_num_seqs`` (alpha: how much of a step grows with the batch; 0.3 by default). It
prints, per batch size, the steps taken against one call for all prompts, and the share of
slot-steps that decoded a token. Trace lengths: lognormal (median 2,000 tokens, sigma 0.8),
capped at ``max_new_tokens`` (8,192), as long reasoning traces are.

    python bench/vllm_batches.py [--prompts 4096] [--max-num-seqs 256]
"""

from __future__ import annotations

import argparse
import heapq
import math
import random


def run(lengths: list[int], batch: int, seqs: int, alpha: float) -> tuple[float, float]:
    """Cost (in unit steps) of decoding ``lengths`` in calls of ``batch`` prompts, and the
    share of slot-steps that decoded a token."""
    cost = 0.0
    used = slots = 0
    for start in range(0, len(lengths), batch):
        queue = lengths[start : start + batch]
        running: list[int] = []  # finishing step of each running sequence (a heap)
        step = 0
        nxt = 0
        while nxt < len(queue) or running:
            while nxt < len(queue) and len(running) < seqs:
                heapq.heappush(running, step + queue[nxt])
                nxt += 1
            # advance to the next finish; the number running is constant until then
            until = running[0]
            span = until - step
            cost += span * (1 + alpha * len(running) / seqs)
            used += span * len(running)
            slots += span * seqs
            step = until
            while running and running[0] == step:
                heapq.heappop(running)
    return cost, used / slots


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompts", type=int, default=4096)
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--max-new-tokens", type=int, default=8192)
    ap.add_argument("--alpha", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    draw = random.Random(args.seed)
    lengths = [
        min(args.max_new_tokens, max(1, round(2000 * math.exp(draw.gauss(0, 0.8)))))
        for _ in range(args.prompts)
    ]
    seqs = args.max_num_seqs
    best, _ = run(lengths, len(lengths), seqs, args.alpha)
    print(
        f"{args.prompts} prompts, max_num_seqs {seqs}, mean {sum(lengths) / len(lengths):.0f} tokens"
    )
    for batch in sorted({8, 64, seqs, 4 * seqs, 16 * seqs, len(lengths)}):
        if batch > len(lengths):
            continue
        cost, use = run(lengths, batch, seqs, args.alpha)
        print(
            f"  batch_size {batch:>5}: {cost / best:.2f}x the steps of one call, "
            f"{use:.0%} of sequence slots decoding"
        )


if __name__ == "__main__":
    main()
