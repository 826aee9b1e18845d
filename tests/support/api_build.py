"""A build recipe whose generators and judge are the loopback chat server (seconds, not a
model's minutes): ``from support.api_build import write_api_recipe``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from support.model_fixtures import ChatServer

API_RECIPE = """
name: api-build
prompts: {{path: prompts.jsonl, reference_column: answer}}
generators:
  strong: {{model: gen-strong, backend: openai, base_url: {url}, batch_size: {batch}, concurrency: {slots}}}
  weak:
    model: gen-weak
    backend: openai
    base_url: {url}
    batch_size: {batch}
    concurrency: {slots}
    prompt_template: "Briefly. {{prompt}}"
pairing: {{chosen: strong, rejected: [weak]}}
judge:
  model: the-judge
  backend: openai
  base_url: {url}
  batch_size: {judge_batch}
  concurrency: {judge_slots}
  dimensions: [step_coherence, factuality]
  scoring: sampled
"""

# a preference dataset's own pairs (prefs.jsonl: question, better, worse) judged by the
# loopback server at {url}
COLUMNS_RECIPE = """
name: plain-prefs
prompts: {{path: prefs.jsonl, column: question}}
pairing: {{strategy: columns, chosen: better, rejected: worse}}
judge:
  model: the-judge
  backend: openai
  base_url: {url}
  dimensions: [step_coherence, factuality]
  scoring: sampled
"""


def write_api_recipe(
    folder: Path,
    server: ChatServer,
    prompts: int,
    *,
    batch_size: int = 2,
    concurrency: int = 1,
    judge: tuple[int, int] = (8, 8),
) -> Path:
    """Generators and judge on the loopback server; it answers every call with a judgment
    (a generator's trace is then that text: it only has to be text). ``batch_size`` and
    ``concurrency``: the generators'; ``judge``: the judge's (batch size, concurrency)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"problem": f"What is {i} plus {i}?", "answer": str(2 * i)} for i in range(prompts)]
    (folder / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    server.state.content = json.dumps(
        {d: {"rationale": "ok", "score": 3} for d in ("step_coherence", "factuality")}
    )
    path = folder / "recipe.yaml"
    path.write_text(
        API_RECIPE.format(
            url=server.url,
            batch=batch_size,
            slots=concurrency,
            judge_batch=judge[0],
            judge_slots=judge[1],
        )
    )
    return path


def interrupt_build(
    cmd: list[str],
    store: Path,
    log: Path,
    *,
    kind: str = "generation",
    sig: signal.Signals = signal.SIGINT,
) -> int:
    """Run the build ``cmd`` in a process group of its own, send it Ctrl-C (SIGINT to the
    group, as a terminal does; or ``sig``) once ``store`` holds a result of ``kind``, and
    return its exit code; its output goes to ``log``. Waits on an event, not a deadline:
    the suite's timeout bounds it."""
    from support.store_fixtures import InspectableStore

    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, start_new_session=True, stdout=sink, stderr=sink)
    try:
        while proc.poll() is None:
            if store.exists() and InspectableStore(store).count_all(kind):
                break
            time.sleep(0.05)
        os.killpg(proc.pid, sig)
        return proc.wait(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
