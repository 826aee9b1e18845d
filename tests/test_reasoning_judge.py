"""Reasoning judges: the judge thinks before the answer's schema applies, on every backend.

The three paths: local models under a grammar that allows a bounded ``<think>`` block before
the schema (the tiny random model, on CPU), an OpenAI-compatible server that returns its
``reasoning_content`` beside a constrained answer (the loopback server), and vLLM's
reasoning parser and thinking budget (vLLM needs a GPU: a stand-in records the engine's
arguments and the ``SamplingParams`` built, as in tests/test_structured_judge.py).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import math
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from distilabel.models.llms.base import LLM

from prefdelta.builders import keys
from prefdelta.builders.judge.reader import AnswerReader
from prefdelta.builders.judge.spec import JudgeSpec, schema_for
from prefdelta.builders.judge.structured import (
    digit_tokens,
    expected_score,
    schema_problem,
)
from prefdelta.builders.judge.task import judge_from_spec
from prefdelta.builders.judge.thinking import split_reasoning
from prefdelta.builders.llms import make_llm
from prefdelta.recipe import JudgeConfig, RecipeError, parse_recipe
from prefdelta.recipe.reasoning import THINK_TAG_TOKENS
from prefdelta.recipe.rubrics import DEFAULT_DIMENSIONS
from support.model_fixtures import (  # noqa: F401
    ChatServer,
    chat_server,
    loaded_judge,
    tiny_model_dir,
)
from test_evaluate_vllm import VLLM_SAMPLING_FIELDS

DIMS = list(DEFAULT_DIMENSIONS)
SCALE = (1, 5)
R1 = "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"


def judgment(scores: list[int], rationale: str = "fine") -> str:
    return json.dumps(
        {d: {"rationale": rationale, "score": s} for d, s in zip(DIMS, scores, strict=True)}
    )


def tokenize(text: str, top: dict[str, float]) -> list[tuple[str, float, list]]:
    """Digits as their own tokens, everything else in runs; each digit gets ``top``."""
    alternatives = [(t, math.log(p)) for t, p in top.items()]
    return [
        (m.group(), math.log(0.5), alternatives if m.group().isdigit() else [])
        for m in re.finditer(r"\d|\D+", text)
    ]


# --------------------------------------------------------------------------- the recipe


@pytest.mark.parametrize(
    ("model", "backend", "parser"),
    [
        ("deepseek-ai/DeepSeek-R1", "vllm", "deepseek_r1"),
        (R1, "openai", "deepseek_r1"),
        ("Qwen/QwQ-32B", "vllm", "deepseek_r1"),
        ("Qwen/Qwen3-8B", "vllm", "qwen3"),
        ("openai/gpt-oss-120b", "vllm", "openai_gptoss"),
    ],
)
def test_auto_turns_reasoning_on_for_a_known_reasoning_family(
    model: str, backend: str, parser: str
) -> None:
    judge = JudgeConfig(model=model, backend=backend)
    assert judge.thinking is not None and judge.thinking.why.startswith("auto: ")
    assert judge.thinking.parser == parser and judge.thinking.budget == 2048
    # the answer keeps its budget (the schema's rationale bound); the reasoning adds its own
    assert judge.token_budget == 1024 + 2048 + THINK_TAG_TOKENS


@pytest.mark.parametrize(
    "model", ["HuggingFaceTB/SmolLM2-135M-Instruct", "Qwen/Qwen3-4B-Instruct-2507", "gpt-4o-mini"]
)
def test_auto_leaves_other_models_answering_at_once(model: str) -> None:
    judge = JudgeConfig(model=model, backend="openai")
    assert judge.thinking is None and judge.token_budget == 1024
    assert JudgeConfig(model=model, backend="openai", reasoning="on").thinking is not None


def test_reasoning_fields_are_checked_with_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_text('{"problem": "1+1?"}\n')
    base = (
        "name: t\nprompts: {path: p.jsonl}\n"
        "generators:\n  a: {model: m, backend: transformers}\n  b: {model: m, backend: transformers}\n"
        "pairing: {chosen: a, rejected: [b]}\n"
    )

    def judge(block: str) -> JudgeConfig:
        return parse_recipe(base + f"judge: {{{block}}}\n", "r.yaml", tmp_path).judge

    # YAML reads bare on/off as booleans
    assert judge("model: m, backend: transformers, reasoning: on").thinking is not None
    assert judge("model: org/DeepSeek-R1, backend: openai, reasoning: off").thinking is None
    bad = {
        "model: m, backend: transformers, reasoning_budget: 64": "reasoning is off for 'm'",
        "model: m, backend: vllm, reasoning: on": "needs `reasoning_parser`",
        "model: m, backend: openai, reasoning: on, reasoning_parser: qwen3": (
            "reasoning_parser applies to backend 'vllm'"
        ),
        "model: m, backend: transformers, reasoning: maybe": "reasoning",
    }
    for block, message in bad.items():
        with pytest.raises(RecipeError) as err:
            judge(block)
        assert message in str(err.value) and "judge" in str(err.value)
    ok = judge("model: m, backend: vllm, reasoning: on, reasoning_parser: qwen3")
    assert ok.thinking is not None and ok.thinking.parser == "qwen3"


def test_reasoning_changes_the_judgment_key() -> None:
    def key(**kw: Any) -> str:
        return keys.judge_fingerprint(JudgeConfig(backend="vllm", **kw), "t")

    # auto, decided: the same R1 judge told to reason or not judges differently
    assert key(model=R1) == key(model=R1, reasoning="on")
    assert key(model=R1) != key(model=R1, reasoning="off")
    assert key(model=R1) != key(model=R1, reasoning_budget=512)
    assert key(model=R1) != key(model=R1, reasoning_parser="qwen3")
    # a judge that does not reason keeps the key it had before the option existed (the
    # recorded keys of tests/test_recipe_identity.py pin the demo's)
    assert key(model="org/m") == key(model="org/m", reasoning="off")
    assert key(model="org/m") != key(model="org/m", reasoning="on", reasoning_parser="qwen3")


# --------------------------------------------------------------------------- reading


def test_digits_in_the_reasoning_never_enter_the_expected_score() -> None:
    """The reasoning holds a whole judgment of its own (all 1s, the digits sure of
    themselves); the expected score reads the answer's score tokens only."""
    answer = judgment([4, 4, 4, 4, 4])
    thought = "<think>A draft: " + judgment([1, 1, 1, 1, 1]) + " no, better:</think>\n"
    output = thought + answer
    tokens = digit_tokens(tokenize(output, {"1": 0.3, "2": 0.2}), output)
    config = JudgeConfig(model=R1, backend="vllm", generation={"max_new_tokens": 600})
    judge = judge_from_spec(
        JudgeSpec.resolve(config), _FixedLLM(text=output, tokens=tokens), name="j"
    )
    judge.load()
    [row] = next(judge.process([{"instruction": "p", "generation": "t"}]))
    assert row["judge_status"] == "ok" and row["score_kind"] == "expected"
    assert row["judge_raw"] == ["\n" + answer]
    assert row["judge_reasoning"] == ["A draft: " + judgment([1] * 5) + " no, better:"]
    # chosen 4 at 0.5, alternatives 1 at 0.3 and 2 at 0.2: all from the answer's tokens
    assert row["scores"] == dict.fromkeys(DIMS, pytest.approx(4 * 0.5 + 1 * 0.3 + 2 * 0.2))
    assert row["judge_answers"][0][0]["tokens"] == 777  # the reasoning's tokens counted
    # the same tokens, their offsets left counting from the reasoning, read other digits
    unshifted = AnswerReader(tuple(DIMS), SCALE, schema_for(config)).outputs(
        [[{"text": "\n" + answer, "tokens": 7, "logprobs": tokens}]]
    )
    assert unshifted["scores"] != row["scores"]


def test_a_reasoning_that_takes_the_whole_budget_is_truncated_not_empty() -> None:
    config = JudgeConfig(model=R1, backend="vllm", generation={"max_new_tokens": 600})
    budget = config.token_budget
    judge = judge_from_spec(
        JudgeSpec.resolve(config),
        _FixedLLM(text="<think>hmm, " * 50, output_tokens=budget),
        name="j",
    )
    judge.load()
    [row] = next(judge.process([{"instruction": "p", "generation": "t"}]))
    assert row["judge_status"] == "truncated"
    assert "reasoning ran to the token budget" in row["judge_problem"]
    assert row["judge_reasoning"][0].startswith("hmm, ")


@pytest.mark.parametrize(
    ("text", "reasoning", "answer"),
    [
        ("<think>a</think>{}", "a", "{}"),
        ("a 1 < 2</think>\n\n{}", "a 1 < 2", "\n\n{}"),  # R1's template opens it
        ("<|channel|>analysis<|message|>a<|end|><|start|>assistant<|channel|>final<|message|>"
         "{}<|return|>", "a", "{}"),
        ("{}", None, "{}"),
    ],
)  # fmt: skip
def test_the_reasoning_is_cut_off_the_answer(text: str, reasoning: str, answer: str) -> None:
    split = split_reasoning(text)
    assert (split.reasoning, split.answer, split.closed) == (reasoning, answer, True)
    assert text[split.start :].startswith(answer)


class _FixedLLM(LLM):
    """Stands in for a backend that returns the whole output, reasoning and all."""

    text: str
    tokens: Any = None
    output_tokens: int = 777

    def load(self) -> None:
        super().load()

    @property
    def model_name(self) -> str:
        return "fixed"

    def generate(  # type: ignore[override]
        self,
        inputs: list[Any],
        num_generations: int = 1,
        max_new_tokens: int = 600 + 2048 + THINK_TAG_TOKENS,
        temperature: float = 0.0,
    ) -> list[dict[str, Any]]:
        return [
            {
                "generations": [self.text] * num_generations,
                "statistics": {
                    "input_tokens": [5] * num_generations,
                    "output_tokens": [self.output_tokens] * num_generations,
                },
                "token_logprobs": [self.tokens] * num_generations,
            }
            for _ in inputs
        ]


# --------------------------------------------------------------------------- local models


def _think_config(model_dir: str, budget: int) -> JudgeConfig:
    return JudgeConfig(
        model=model_dir,
        backend="transformers",
        batch_size=4,
        max_retries=0,
        reasoning="on",
        reasoning_budget=budget,
        generation={"temperature": 0.0, "max_new_tokens": 420},
    )


def _judge_under_the_think_grammar(model_dir: str, cache: str, budget: int) -> list[dict[str, Any]]:
    """The tiny judge under the think grammar, in a spawned process: xgrammar's compiler
    threads, once started in the pytest process, deadlock a later test's forked build
    workers when they compile a grammar."""
    import os

    os.environ["PREFDELTA_CACHE"] = cache
    config = _think_config(model_dir, budget)
    llm = make_llm(
        config,
        config.generation,
        Path("."),
        json_schema=schema_for(config),
        logprobs=True,
        reasoning=config.thinking,
    )
    assert llm.generation_kwargs["max_new_tokens"] == 420 + budget + THINK_TAG_TOKENS
    judge = judge_from_spec(JudgeSpec.resolve(config), llm, name="judge")
    judge.load()
    return next(
        judge.process(
            [
                {"instruction": f"What is {i} + {i}?", "generation": f"{i} + {i} = {2 * i}."}
                for i in range(4)
            ]
        )
    )


def test_tiny_model_reasons_in_a_bounded_think_block_before_the_schema(
    tiny_model_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    import multiprocessing

    from transformers import AutoTokenizer

    budget = 40
    config = _think_config(str(tiny_model_dir), budget)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        rows = pool.apply(
            _judge_under_the_think_grammar, (str(tiny_model_dir), str(tmp_path / "cache"), budget)
        )
    assert any(row["judge_reasoning"][0] for row in rows)  # it did write in the block
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    schema = schema_for(config)
    for row in rows:
        assert row["judge_status"] == "ok" and row["score_kind"] == "expected"
        [answer], [thought] = row["judge_raw"], row["judge_reasoning"]
        assert schema_problem(answer, schema) is None  # the schema held after the block
        assert isinstance(thought, str) and len(thought) <= budget and "<" not in thought
        [[attempt]] = row["judge_answers"]
        # the judge's tokens count the think block as well as the answer
        assert attempt["tokens"] > len(tokenizer(answer, add_special_tokens=False).input_ids)
        for token in attempt["logprobs"]:  # every score token read lies in the answer
            assert answer[token["offset"] : token["offset"] + len(token["token"])] == token["token"]
        for dim in DIMS:
            probs = row["score_probs"][dim]
            assert row["scores"][dim] == pytest.approx(expected_score(probs, SCALE))
        # the stored answer is read again to the same scores (a rebuild calls no judge)
        assert JudgeSpec.resolve(config).reader.outputs(row["judge_answers"]) == {
            k: row[k] for k in JudgeSpec.resolve(config).reader.outputs(row["judge_answers"])
        }


# --------------------------------------------------------------------------- API server


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_a_server_returns_its_reasoning_beside_the_constrained_answer(
    chat_server: ChatServer,  # noqa: F811
    field: str,
) -> None:
    chat_server.state.content = judgment([4, 3, 4, 3, 4])
    chat_server.state.reasoning = "The trace adds 2 and 2 and gets 5: wrong at step 1."
    chat_server.state.reasoning_field = field
    config = JudgeConfig(
        model=R1,
        backend="openai",
        base_url=chat_server.url,
        max_retries=0,
        reasoning_budget=300,
        generation={"temperature": 0.0, "max_new_tokens": 600},
    )
    judge = loaded_judge(config)
    [row] = next(judge.process([{"instruction": "p", "generation": "t"}]))
    [body] = chat_server.state.bodies
    assert body["response_format"]["type"] == "json_schema"  # the answer stays constrained
    assert body["max_tokens"] == 600 + 300 + THINK_TAG_TOKENS
    assert row["judge_status"] == "ok" and row["scores"]["factuality"] == 4.0
    assert row["judge_raw"] == [judgment([4, 3, 4, 3, 4])]
    assert row["judge_reasoning"] == [chat_server.state.reasoning]
    assert row["judge_answers"][0][0]["tokens"] == 3  # the server's completion tokens


def test_a_judge_that_does_not_reason_keeps_no_reasoning(chat_server: ChatServer) -> None:  # noqa: F811
    chat_server.state.content = judgment([4, 3, 4, 3, 4])
    chat_server.state.reasoning = "ignored"
    config = JudgeConfig(
        model="served",
        backend="openai",
        base_url=chat_server.url,
        max_retries=0,
        generation={"temperature": 0.0, "max_new_tokens": 600},
    )
    [row] = next(loaded_judge(config).process([{"instruction": "p", "generation": "t"}]))
    assert row["judge_status"] == "ok" and row["judge_reasoning"] is None
    assert chat_server.state.bodies[0]["max_tokens"] == 600


def test_a_server_without_a_reasoning_field_has_its_think_block_cut_off(
    chat_server: ChatServer,  # noqa: F811
) -> None:
    chat_server.state.content = "<think>2 + 2 is 4; the trace says 5.</think>\n" + judgment(
        [2, 2, 2, 2, 2]
    )
    config = JudgeConfig(
        model=R1,
        backend="openai",
        base_url=chat_server.url,
        max_retries=0,
        scoring="sampled",
        generation={"temperature": 0.0, "max_new_tokens": 600},
    )
    [row] = next(loaded_judge(config).process([{"instruction": "p", "generation": "t"}]))
    assert row["judge_status"] == "ok" and row["scores"]["factuality"] == 2.0
    assert row["judge_reasoning"] == ["2 + 2 is 4; the trace says 5."]


# --------------------------------------------------------------------------- vLLM


HARMONY_ANALYSIS = "<|channel|>analysis<|message|>"
HARMONY_FINAL = "<|end|><|start|>assistant<|channel|>final<|message|>"


@pytest.mark.parametrize(
    ("model", "parser", "opened", "closed", "bounded"),
    [
        # R1's template opens the block in the prompt; vLLM can end it at the budget
        (R1, "deepseek_r1", "", "</think>\n\n", True),
        # gpt-oss reasons in harmony's analysis channel: only max_tokens bounds it
        ("openai/gpt-oss-20b", "openai_gptoss", HARMONY_ANALYSIS, HARMONY_FINAL, False),
    ],
)
def test_vllm_gets_its_reasoning_parser_and_thinking_budget(
    monkeypatch: pytest.MonkeyPatch,
    model: str,
    parser: str,
    opened: str,
    closed: str,
    bounded: bool,
) -> None:
    engine: dict[str, Any] = {}
    sampling: dict[str, Any] = {}
    answer = judgment([3, 3, 3, 3, 3])
    thought = "Is 2 + 2 = 5? No: 4."
    text = opened + thought + closed + answer
    pieces = tokenize(text, {"1": 0.5})
    tokenizer = types.SimpleNamespace(
        encode=lambda text: text.split(),
        apply_chat_template=lambda chat, **_: chat[-1]["content"],
    )

    def lp(token: str, logprob: float) -> Any:
        return types.SimpleNamespace(decoded_token=token, logprob=logprob)

    output = types.SimpleNamespace(
        text=text,
        token_ids=list(range(len(pieces))),
        logprobs=[
            {i: lp(tok, -0.1), 1000 + i: lp("4", math.log(0.25))}
            for i, (tok, _, _) in enumerate(pieces)
        ],
    )

    class LLM:
        def __init__(self, model: str, **kwargs: Any) -> None:
            engine.update(kwargs, model=model)

        def get_tokenizer(self) -> Any:
            return tokenizer

        def generate(self, prompts: list[str], sampling_params: Any, use_tqdm: bool) -> list:
            return [types.SimpleNamespace(prompt_logprobs=None, outputs=[output]) for _ in prompts]

    class Recorded:
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs

    class SamplingParams:
        def __init__(self, **kwargs: Any) -> None:
            sampling.update(kwargs)

    def module(name: str) -> types.ModuleType:
        m = types.ModuleType(name)
        m.__spec__ = importlib.machinery.ModuleSpec(name, None)
        return m

    vllm, params, pynvml = module("vllm"), module("vllm.sampling_params"), module("pynvml")
    config_module = module("vllm.config")
    vllm.LLM, vllm.SamplingParams = LLM, SamplingParams  # type: ignore[attr-defined]
    params.StructuredOutputsParams = Recorded  # type: ignore[attr-defined]
    config_module.ReasoningConfig = Recorded  # type: ignore[attr-defined]
    pynvml.nvmlInit = lambda: None  # type: ignore[attr-defined]
    pynvml.nvmlDeviceGetCount = lambda: 1  # type: ignore[attr-defined]
    stand_ins = {
        "vllm": vllm,
        "vllm.sampling_params": params,
        "vllm.config": config_module,
        "pynvml": pynvml,
    }
    for name, m in stand_ins.items():
        monkeypatch.setitem(sys.modules, name, m)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")

    config = JudgeConfig(
        model=model,
        backend="vllm",
        max_retries=0,
        reasoning_budget=512,
        generation={"temperature": 0.0, "max_new_tokens": 600},
    )
    [row] = next(loaded_judge(config).process([{"instruction": "p", "generation": "t"}]))

    # the engine parses the model's reasoning, so its structured outputs start after it
    # (LLM's keywords reach vLLM's EngineArgs, which has `reasoning_parser` and
    # `reasoning_config`)
    assert engine["reasoning_parser"] == parser and engine["model"] == model
    assert set(sampling) <= VLLM_SAMPLING_FIELDS  # vLLM 0.33's SamplingParams takes them
    assert sampling["max_tokens"] == 600 + 512 + THINK_TAG_TOKENS
    assert sampling["structured_outputs"].kwargs == {"json": schema_for(config)}
    if bounded:  # vLLM takes a thinking budget only with the reasoning's tags configured
        assert engine["reasoning_config"].kwargs == {
            "reasoning_parser": parser,
            "reasoning_start_str": "<think>",
            "reasoning_end_str": "</think>",
        }
        assert sampling["thinking_token_budget"] == 512
        assert sampling["skip_special_tokens"] is True  # R1's </think> is a plain token
    else:
        assert "reasoning_config" not in engine and "thinking_token_budget" not in sampling
        assert sampling["skip_special_tokens"] is False  # harmony's markers are special
    assert row["judge_status"] == "ok" and row["judge_raw"][0].strip() == answer
    assert row["judge_reasoning"] == [thought]
    # chosen 3 at e^-0.1, alternative 4 at 0.25: the reasoning's 2, 5 and 4 left out
    p3 = math.exp(-0.1) / (math.exp(-0.1) + 0.25)
    assert row["scores"]["factuality"] == pytest.approx(3 * p3 + 4 * (1 - p3))
    assert row["judge_answers"][0][0]["tokens"] == len(pieces)  # reasoning tokens counted


# --------------------------------------------------------------------------- the card


def test_the_card_states_whether_the_judge_reasoned(tmp_path: Path) -> None:
    from prefdelta.push import publish_build
    from support.build_fixtures import make_build

    def card(build: Path, out: Path) -> str:
        return (Path(publish_build(build, out, test_size=0).target) / "README.md").read_text()

    plain = make_build(tmp_path / "b1", n_prompts=4)
    assert "It answered without reasoning first (reasoning: off,\nby the auto rule" in card(
        plain, tmp_path / "p1"
    )
    build = make_build(tmp_path / "b2", n_prompts=4)
    recipe = build / "recipe.yaml"
    settings = "  reasoning: on\n  reasoning_budget: 300\n  reasoning_parser: deepseek_r1\n"
    judge = "  model: org/judge\n"
    recipe.write_text(recipe.read_text().replace(judge, judge + settings))
    summary = json.loads((build / "summary.json").read_text())
    summary["files"]["recipe.yaml"] = hashlib.sha256(recipe.read_bytes()).hexdigest()
    (build / "summary.json").write_text(json.dumps(summary))
    text = " ".join(card(build, tmp_path / "p2").split())
    assert "It reasoned before answering (reasoning on, up to 300 tokens" in text
    assert "`traces` column `judge_reasoning`" in text


# --------------------------------------------------------------------------- a build


@pytest.mark.slow
def test_a_build_keeps_the_reasoning_and_turning_it_on_rejudges_only(
    tmp_path: Path,
    tiny_model_dir: Path,  # noqa: F811
) -> None:
    """A tiny-model build judged at once, then with reasoning on: the traces are reused,
    every judgment is asked anew (its key changed), and traces.parquet keeps the reasoning.
    Each build runs as `prefdelta build` does, in a process of its own (distilabel forks
    its workers, which hang if this process ran torch before, as other tests here do)."""
    import subprocess

    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    from prefdelta.schema import SUMMARY
    from test_build import write_recipe

    out = tmp_path / "out"
    path = write_recipe(tmp_path, tiny_model_dir, prompts=2)

    def build() -> dict[str, Any]:
        cmd = [sys.executable, "-m", "prefdelta", "build", str(path), "-o", str(out)]
        subprocess.run([*cmd, "--no-publish"], check=True, capture_output=True, timeout=600)
        return json.loads((out / SUMMARY).read_text())

    first = build()
    assert first["judge_status"] == {"ok": 6}
    plain = pq.read_table(out / "traces.parquet").to_pylist()
    assert [t["judge_reasoning"] for t in plain] == [None] * 6

    text = path.read_text()
    reasoning = "  reasoning: on\n  reasoning_budget: 24\n  structured:"
    path.write_text(text.replace("  structured:", reasoning))
    second = build()
    assert second["reused"]["generated"] == 0 and second["reused"]["judged"] == 6
    assert second["judge_status"] == {"ok": 6} and second["score_kind"] == {"expected": 6}
    traces = pq.read_table(out / "traces.parquet").to_pylist()
    assert [t["trace"] for t in traces] == [t["trace"] for t in plain]
    for t in traces:
        [thought] = t["judge_reasoning"]
        assert isinstance(thought, str) and len(thought) <= 24
    # the judge's tokens count the reasoning too: more than its answers alone take
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    answers = [a for t in traces for a in t["judge_raw"]]
    answer_tokens = sum(len(tokenizer(a, add_special_tokens=False).input_ids) for a in answers)
    assert second["tokens"]["judge"]["output"] >= answer_tokens + 2 * len(answers)


def test_tgi_cannot_reason_before_its_grammar(tmp_path: Path) -> None:
    tgi = {"model": R1, "backend": "inference-endpoints", "base_url": "http://127.0.0.1:9"}
    assert JudgeConfig(**tgi).thinking is None  # auto: its grammar holds from the first token
    assert JudgeConfig(**tgi, structured="off", scoring="sampled").thinking is not None
    with pytest.raises(ValueError, match="cannot reason first: use structured: off"):
        JudgeConfig(**tgi, reasoning="on")


def test_log_probs_that_cover_the_reasoning_too_are_read_from_the_answer_on(
    chat_server: ChatServer,  # noqa: F811
) -> None:
    """vLLM's server returns the log-probs of every generated token, the reasoning's
    included, beside a content that holds the answer only."""
    answer = judgment([4, 4, 4, 4, 4])
    chat_server.state.content = answer
    chat_server.state.reasoning = "Maybe 1, maybe 2: I say 4."
    pieces = tokenize(chat_server.state.reasoning + answer, {"1": 0.3, "2": 0.2})
    chat_server.state.logprobs = [
        {
            "token": token,
            "logprob": logprob,
            "bytes": None,
            "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in top],
        }
        for token, logprob, top in pieces
    ]
    config = JudgeConfig(
        model=R1,
        backend="openai",
        base_url=chat_server.url,
        max_retries=0,
        generation={"temperature": 0.0, "max_new_tokens": 600},
    )
    [row] = next(loaded_judge(config).process([{"instruction": "p", "generation": "t"}]))
    assert row["judge_status"] == "ok" and row["score_kind"] == "expected"
    assert row["scores"] == dict.fromkeys(DIMS, pytest.approx(4 * 0.5 + 1 * 0.3 + 2 * 0.2))
    assert row["judge_reasoning"] == [chat_server.state.reasoning]
