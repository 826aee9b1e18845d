"""The sweep's evaluation on vLLM, with a LoRA run: the engine gets a plain merged folder.

vLLM needs a GPU, so a stand-in ``vllm`` module (and ``pynvml``, which vLLM brings) is put
in ``sys.modules``: it records what the evaluation asks of vLLM's API, and the names are
checked against vLLM 0.33.0's own (``LLM.__init__`` and ``SamplingParams`` fields, read
from its wheel). No fallback to transformers: the stand-in's ``LLM`` is what answers.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from prefdelta.train.sweep.config import EvalConfig, EvalSet
from prefdelta.train.sweep.evaluate import EvalPrompt, evaluate_model, merged_for_eval
from support.model_fixtures import tiny_model_dir  # noqa: F401  (a fixture)

# vLLM 0.33.0's own names, read from its wheel: LLM.__init__'s parameters (vllm/entrypoints/
# llm.py; more go through **kwargs to its engine arguments) and SamplingParams' fields
# (vllm/sampling_params.py, a msgspec struct: any other keyword is a TypeError)
VLLM_LLM_ARGS = {
    "model", "runner", "convert", "tokenizer", "tokenizer_mode", "skip_tokenizer_init",
    "trust_remote_code", "allowed_local_media_path", "allowed_media_domains",
    "tensor_parallel_size", "dtype", "quantization", "revision", "tokenizer_revision",
    "chat_template", "seed", "gpu_memory_utilization", "cpu_offload_gb", "enforce_eager",
    "hf_token", "hf_overrides", "structured_outputs_config", "logits_processors",
}  # fmt: skip
VLLM_SAMPLING_FIELDS = {
    "n", "presence_penalty", "frequency_penalty", "repetition_penalty", "temperature",
    "watermarking", "top_p", "top_k", "min_p", "seed", "stop", "stop_token_ids", "ignore_eos",
    "max_tokens", "min_tokens", "logprobs", "prompt_logprobs", "prompt_logprob_token_ids",
    "prompt_logprob_start", "logprob_token_ids", "flat_logprobs", "detokenize",
    "skip_special_tokens", "spaces_between_special_tokens", "include_stop_str_in_output",
    "output_kind", "stream_interval", "skip_clone", "output_text_buffer_length",
    "structured_outputs", "logit_bias", "allowed_token_ids", "extra_args", "bad_words",
    "skip_reading_prefix_cache", "thinking_token_budget", "repetition_detection",
    "routed_experts_prompt_start", "trace_decode_token_ids",
}  # fmt: skip


class _Calls:
    def __init__(self) -> None:
        self.llm: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.sampling: list[dict[str, Any]] = []
        self.prompts: list[str] = []


def _stand_in_vllm(calls: _Calls, tokenizer: Any) -> dict[str, types.ModuleType]:
    def module(name: str) -> types.ModuleType:
        m = types.ModuleType(name)
        m.__spec__ = importlib.machinery.ModuleSpec(name, None)
        return m

    class LLM:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            calls.llm.append((args, kwargs))
            self.llm_engine = types.SimpleNamespace(model_executor=None)

        def get_tokenizer(self) -> Any:
            return tokenizer

        def generate(self, prompts: list[str], sampling_params: Any, use_tqdm: bool) -> list:
            calls.prompts += prompts
            out = types.SimpleNamespace(text="\\boxed{4}", token_ids=[1, 2, 3], logprobs=None)
            return [types.SimpleNamespace(outputs=[out], prompt_logprobs=None) for _ in prompts]

    class SamplingParams:
        def __init__(self, **kwargs: Any) -> None:
            calls.sampling.append(kwargs)

    vllm = module("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, SamplingParams  # type: ignore[attr-defined]
    parallel = module("vllm.distributed.parallel_state")
    parallel.destroy_model_parallel = lambda: None  # type: ignore[attr-defined]
    parallel.destroy_distributed_environment = lambda: None  # type: ignore[attr-defined]
    pynvml = module("pynvml")
    pynvml.nvmlInit = lambda: None  # type: ignore[attr-defined]
    pynvml.nvmlDeviceGetCount = lambda: 1  # type: ignore[attr-defined]
    return {
        "vllm": vllm,
        "vllm.distributed": module("vllm.distributed"),
        "vllm.distributed.parallel_state": parallel,
        "pynvml": pynvml,
    }


def _lora_run(base: Path, run_dir: Path) -> Path:
    """What a `use_peft: true` run saves: an adapter and the tokenizer, no full model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base)
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    get_peft_model(model, lora).save_pretrained(run_dir)
    AutoTokenizer.from_pretrained(base).save_pretrained(run_dir)
    return run_dir


def _evaluate_on_stand_in(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, list[str], _Calls, dict[str, Any]]:
    """A LoRA run merged for evaluation, then evaluated on the stand-in vLLM."""
    from transformers import AutoTokenizer

    run = _lora_run(base, tmp_path / "run")
    lines: list[str] = []
    merged = merged_for_eval(run, lines.append)
    calls = _Calls()
    for name, module in _stand_in_vllm(calls, AutoTokenizer.from_pretrained(merged)).items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # distilabel's placement sets it
    config = EvalConfig.model_validate(
        {
            "backend": "vllm",
            "dtype": "bfloat16",
            "tensor_parallel_size": 2,
            "generation": {"temperature": 0.0, "max_new_tokens": 64},
            "system_prompt": "Reason step by step.",
        }
    )
    prompts = [EvalPrompt("p1", "What is 2 + 2?", "4"), EvalPrompt("p2", "What is 1 + 3?", "4")]
    results = evaluate_model(str(merged), config, [(EvalSet(name="s"), prompts)], tmp_path)
    return run, lines, calls, results


def test_a_lora_run_is_evaluated_on_vllm_as_a_merged_folder(
    tiny_model_dir: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run, lines, calls, results = _evaluate_on_stand_in(tiny_model_dir, tmp_path, monkeypatch)
    merged = run / "merged"
    assert (merged / "config.json").is_file() and not (merged / "adapter_config.json").exists()
    assert lines == [f"{run}: LoRA adapter merged into {merged} for evaluation"]
    assert merged_for_eval(run, lines.append) == merged and len(lines) == 1  # merged once

    # vLLM answered (no fallback to transformers), from the merged folder: plain weights,
    # so the engine needs no enable_lora / max_lora_rank
    assert results["s"]["accuracy"] == 1.0 and results["s"]["n_eval"] == 2
    ((args, kwargs),) = calls.llm
    assert args == (str(merged),)
    assert kwargs["dtype"] == "bfloat16" and kwargs["tensor_parallel_size"] == 2
    assert set(kwargs) <= VLLM_LLM_ARGS, set(kwargs) - VLLM_LLM_ARGS
    (sampling,) = calls.sampling
    assert sampling["temperature"] == 0.0 and sampling["max_tokens"] == 64 and sampling["n"] == 1
    assert len(calls.prompts) == 2 and "Reason step by step." in calls.prompts[0]
    assert "What is 2 + 2?" in calls.prompts[0]


def test_every_sampling_argument_is_a_vllm_0_33_field(
    tiny_model_dir: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, _, calls, _ = _evaluate_on_stand_in(tiny_model_dir, tmp_path, monkeypatch)
    (sampling,) = calls.sampling
    assert set(sampling) <= VLLM_SAMPLING_FIELDS, set(sampling) - VLLM_SAMPLING_FIELDS
