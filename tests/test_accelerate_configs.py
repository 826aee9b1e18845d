"""The accelerate configs a GPU user is pointed at exist, and accelerate reads them.

Every ``--config_file PATH`` named in recipes/ and README.md must be a file of
recipes/accelerate/ that accelerate's own loader accepts (unknown keys are errors there),
with the keys its launcher needs for that kind of run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parent.parent
SHIPPED = ROOT / "recipes" / "accelerate"
# distributed_type -> the keys `accelerate launch` needs from a config of that kind
NEEDS = {
    "MULTI_GPU": ("num_processes", "num_machines", "mixed_precision"),
    "FSDP": ("num_processes", "num_machines", "mixed_precision", "fsdp_config"),
    "DEEPSPEED": ("num_processes", "num_machines", "mixed_precision", "deepspeed_config"),
}


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "recipes").rglob("*.yaml"))]


def named_config_files() -> list[tuple[Path, str]]:
    """(document, path) for every ``--config_file PATH`` in recipes/ and README.md."""
    found = []
    for doc in _documents():
        for match in re.finditer(r"--config_file[ =]([^\s`'\"]+)", doc.read_text()):
            found.append((doc, match.group(1)))
    return found


def test_every_named_accelerate_config_exists() -> None:
    named = named_config_files()
    # the paper's training config names all three; the README's GPU section does too
    assert {p for _, p in named} >= {
        f"recipes/accelerate/{n}" for n in ("multi_gpu.yaml", "fsdp.yaml", "zero3.yaml")
    }
    for doc, path in named:
        assert (ROOT / path).is_file(), f"{doc.relative_to(ROOT)} names {path}, which is missing"


@pytest.mark.parametrize("name", ["multi_gpu.yaml", "fsdp.yaml", "zero3.yaml"])
def test_shipped_configs_are_what_accelerate_reads(name: str) -> None:
    from accelerate.commands.config.config_args import ClusterConfig

    path = SHIPPED / name
    config = ClusterConfig.from_yaml_file(str(path))  # accelerate's own loader
    data = yaml.safe_load(path.read_text())
    kind = str(config.distributed_type).split(".")[-1]
    assert kind == {"multi_gpu": "MULTI_GPU", "fsdp": "FSDP", "zero3": "DEEPSPEED"}[path.stem]
    missing = [k for k in NEEDS[kind] if k not in data]
    assert not missing, f"{name}: missing {missing}"
    assert config.num_machines == 1 and config.num_processes >= 2 and not config.use_cpu
    if kind == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] == 3
    if kind == "FSDP":
        # a full state dict: the saved model is a plain folder evaluation can load
        assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
        assert config.fsdp_config["fsdp_version"] == 2
        # rank 0 alone would hold the weights when the reference log-probs are computed
        assert config.fsdp_config["fsdp_cpu_ram_efficient_loading"] is False
