"""A build recipe whose generators and judge are the loopback chat server (seconds, not a
model's minutes): ``from support.api_build import write_api_recipe``."""

from __future__ import annotations

import json
from pathlib import Path

from support.model_fixtures import ChatServer

API_RECIPE = """
name: api-build
prompts: {{path: prompts.jsonl, reference_column: answer}}
generators:
  strong: {{model: gen-strong, backend: openai, base_url: {url}, batch_size: 2, concurrency: 1}}
  weak:
    model: gen-weak
    backend: openai
    base_url: {url}
    batch_size: 2
    concurrency: 1
    prompt_template: "Briefly. {{prompt}}"
pairing: {{chosen: strong, rejected: [weak]}}
judge:
  model: the-judge
  backend: openai
  base_url: {url}
  dimensions: [step_coherence, factuality]
  scoring: sampled
"""


def write_api_recipe(folder: Path, server: ChatServer, prompts: int) -> Path:
    """Generators and judge on the loopback server; it answers every call with a judgment
    (a generator's trace is then that text: it only has to be text)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"problem": f"What is {i} plus {i}?", "answer": str(2 * i)} for i in range(prompts)]
    (folder / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    server.state.content = json.dumps(
        {d: {"rationale": "ok", "score": 3} for d in ("step_coherence", "factuality")}
    )
    path = folder / "recipe.yaml"
    path.write_text(API_RECIPE.format(url=server.url))
    return path
