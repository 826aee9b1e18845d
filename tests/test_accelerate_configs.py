"""The accelerate configs a GPU user is pointed at exist, and accelerate reads them.

Every ``--config_file PATH`` named in recipes/, README.md and docs/ must be a file of
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
    return [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "recipes").rglob("*.yaml")),
    ]


def named_config_files() -> list[tuple[Path, str]]:
    """(document, path) for every ``--config_file PATH`` in recipes/, README.md and docs/."""
    found = []
    for doc in _documents():
        for match in re.finditer(r"--config_file[ =]([^\s`'\"]+)", doc.read_text()):
            found.append((doc, match.group(1)))
    return found


def test_every_named_accelerate_config_exists() -> None:
    named = named_config_files()
    # the paper's training config names all three; the GPU page does too
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


def _gpu_section() -> str:
    return (ROOT / "docs" / "gpus.md").read_text()


def _commands(section: str) -> list[list[str]]:
    """The shell lines of the section's shell code blocks, comments dropped (a ```yaml
    block is a recipe snippet, not a command)."""
    import shlex

    out, inside = [], False
    for line in section.splitlines():
        if line.startswith("```"):
            inside = not inside and line.strip() in ("```bash", "```sh", "```console")
        elif inside and line.strip():
            out.append(shlex.split(line, comments=True))
    return out


def test_gpu_page_commands_name_real_files_and_parse() -> None:
    """Every command on the On GPUs page (docs/gpus.md): its files exist, its extras are the
    package's, its recipes and sweep configs validate, and each `accelerate launch` line's
    training arguments parse as the script would parse them (on CPU here)."""
    import importlib

    from prefdelta.recipe import load_recipe
    from prefdelta.schema import LOGS, PLACEMENT_LOG
    from prefdelta.train.configs import parse_config
    from prefdelta.train.sweep.config import load_sweep

    section = _gpu_section()
    for path in re.findall(r"(?<![\w/.])((?:recipes|scripts|tests)/[\w./-]+\w)", section):
        assert (ROOT / path).exists(), f"docs/gpus.md names {path}, which is missing"
    pyproject = (ROOT / "pyproject.toml").read_text()  # (tomllib: Python 3.11+ only)
    table = pyproject.split("[project.optional-dependencies]")[1].split("\n[")[0]
    extras = re.findall(r"^([\w-]+) = \[", table, flags=re.M)
    commands = _commands(section)
    kinds = set()
    for cmd in commands:
        kinds.add(cmd[0] if cmd[0] != "prefdelta" else f"prefdelta {cmd[1]}")
        if cmd[:2] == ["pip", "install"]:
            (target,) = [a for a in cmd[2:] if a.startswith(".[")]
            assert set(target[2:-1].split(",")) <= set(extras), target
        elif cmd[0] == "prefdelta" and cmd[1] in ("validate", "build"):
            load_recipe(ROOT / cmd[2])
        elif cmd[0] == "prefdelta" and cmd[1] == "sweep":
            config, _ = load_sweep(ROOT / cmd[2])
            assert config.launch is not None and config.launch.devices
        elif cmd[:2] == ["accelerate", "launch"]:
            config_file = cmd[cmd.index("--config_file") + 1]
            assert (ROOT / config_file).is_file()
            module = cmd[cmd.index("-m") + 1]
            script = importlib.import_module(module)
            argv = [str(ROOT / cmd[cmd.index("-m") + 2]), *cmd[cmd.index("-m") + 3 :]]
            parse_config(script.DATACLASSES, [*argv, "--use_cpu", "true", "--bf16", "false"])
        elif cmd[0] == "jq":  # reads a Ray build's placement log: its path, its fields
            assert f"builds/NAME/{LOGS}/{PLACEMENT_LOG}" in cmd
            logged = {"time", "step", "replica", "node_id", "host", "pid", "rows", "actor"}
            assert set(re.findall(r"\.(\w+)", cmd[2])) <= logged, cmd[2]
        else:
            raise AssertionError(f"a docs/gpus.md command no test checks: {' '.join(cmd)}")
    assert kinds == {
        "jq",
        "pip",
        "prefdelta validate",
        "prefdelta build",
        "accelerate",
        "prefdelta sweep",
    }
    launched = {c[c.index("--config_file") + 1] for c in commands if c[0] == "accelerate"}
    assert launched == {
        f"recipes/accelerate/{n}" for n in ("multi_gpu.yaml", "fsdp.yaml", "zero3.yaml")
    }
