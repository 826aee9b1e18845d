"""ReasoningJudge run as distilabel runs it: standalone (load, then process) with a scripted
LLM, inside a real Pipeline, and on a real (tiny, random) transformers model."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest
from distilabel.models.llms.base import LLM
from distilabel.steps import StepInput
from distilabel.typing import StepOutput
from pydantic import Field, PrivateAttr

from prefdelta.builders.judge.spec import JudgeSpec
from prefdelta.builders.judge.task import JUDGE_OUTPUTS, ReasoningJudge, judge_from_spec
from prefdelta.recipe import JudgeConfig
from prefdelta.recipe.rubrics import DEFAULT_DIMENSIONS

DIMS = list(DEFAULT_DIMENSIONS)
BUDGET = 200


def answer(*scores: float, rationale: str = "fine") -> str:
    """A well-formed judgment, in the shape the template asks for."""
    return json.dumps(
        {
            d: {"score": s, "rationale": f"{rationale} {d}"}
            for d, s in zip(DIMS, scores, strict=True)
        }
    )


def _trace_of(messages: list[dict[str, str]]) -> str:
    content = messages[0]["content"]
    return content.split("<trace>\n", 1)[1].split("\n</trace>", 1)[0]


class ScriptedLLM(LLM):
    """Replies from a script keyed by the judged trace, in order, one per generation.

    A reply is a string or ``[text, output_tokens]``; by default output tokens are the
    number of words, far under the budget. Generation parameters are listed explicitly:
    ``**kwargs`` would break distilabel's runtime-parameter check.
    """

    script: dict[str, list[Any]]
    fail_calls: list[int] = Field(default_factory=list)
    _calls: list[dict[str, Any]] = PrivateAttr(default_factory=list)

    def load(self) -> None:
        super().load()

    @property
    def model_name(self) -> str:
        return "scripted-judge"

    def generate(  # type: ignore[override]
        self,
        inputs: list[list[dict[str, str]]],
        num_generations: int = 1,
        max_new_tokens: int = BUDGET,
        temperature: float = 0.0,
    ) -> list[dict[str, Any]]:
        self._calls.append(
            {"inputs": inputs, "n": num_generations, "max_new_tokens": max_new_tokens}
        )
        if len(self._calls) in self.fail_calls:
            raise ConnectionError("judge server went away")
        outputs = []
        for messages in inputs:
            texts, tokens = [], []
            for _ in range(num_generations):
                reply = self.script[_trace_of(messages)].pop(0)
                text, n = (reply, len(reply.split())) if isinstance(reply, str) else reply
                texts.append(text)
                tokens.append(n)
            outputs.append(
                {
                    "generations": texts,
                    "statistics": {"input_tokens": [7] * num_generations, "output_tokens": tokens},
                }
            )
        return outputs


def make_judge(script: dict[str, list[Any]], **kwargs: Any) -> tuple[ReasoningJudge, ScriptedLLM]:
    fail_calls = kwargs.pop("fail_calls", [])
    llm = ScriptedLLM(
        script=script, fail_calls=fail_calls, generation_kwargs={"max_new_tokens": BUDGET}
    )
    judge = ReasoningJudge(llm=llm, **kwargs)
    judge.load()
    return judge, llm


def run(judge: ReasoningJudge, traces: list[str | None]) -> list[dict[str, Any]]:
    rows = [{"instruction": f"Problem {i}", "generation": t} for i, t in enumerate(traces)]
    return next(judge.process(rows))


def test_ok_rows_one_batched_call() -> None:
    judge, llm = make_judge({"t1": [answer(4, 3, 5, 2, 4)], "t2": [answer(1, 2, 3, 4, 5)]})
    out = run(judge, ["t1", "t2"])
    assert [len(c["inputs"]) for c in llm._calls] == [2]
    assert llm._calls[0]["n"] == 1
    first = out[0]
    assert set(JUDGE_OUTPUTS) <= set(first)
    assert first["instruction"] == "Problem 0" and first["generation"] == "t1"
    assert first["judge_status"] == "ok" and first["judge_problem"] is None
    assert first["scores"] == dict(zip(DIMS, (4.0, 3.0, 5.0, 2.0, 4.0), strict=True))
    assert first["score_spread"] == dict.fromkeys(DIMS, 0.0)
    assert first["rationales"]["factuality"] == "fine factuality"
    assert first["judge_raw"] == [answer(4, 3, 5, 2, 4)]
    assert first["judge_attempts"] == 1 and first["judge_samples"] == 1
    assert first["model_name"] == "scripted-judge"
    assert out[1]["scores"]["signal_to_noise"] == 5.0


def test_prompt_shows_every_rubric_the_scale_and_the_shape() -> None:
    judge, _ = make_judge({}, scale=(0, 10))
    [message] = judge.format_input({"instruction": "What is 6*7?", "generation": "6*7=42"})
    text = message["content"]
    for d in judge.dimensions:
        assert d["name"] in text and d["rubric"] in text
    assert "What is 6*7?" in text and "6*7=42" in text
    assert "from 0 (worst) to 10 (best)" in text
    assert "length" in text and "style" in text
    assert "JSON object keyed by the dimension names" in text
    assert '{"factuality": {"rationale": "...", "score": <0-10>}, ...}' in text


def test_retries_are_batched_and_show_the_problem() -> None:
    refuse_range_ok = [
        "I'm sorry, but I can't grade this.",
        answer(9, 3, 3, 3, 3),
        answer(2, 3, 3, 3, 3),
    ]
    script = {
        "good": [answer(5, 5, 5, 5, 5)],
        "prose-then-ok": ["The trace looks fine to me.", answer(3, 3, 3, 3, 3)],
        "refuse-range-ok": list(refuse_range_ok),
    }
    judge, llm = make_judge(script, max_retries=2)
    out = run(judge, ["good", "prose-then-ok", "refuse-range-ok"])
    assert [(len(c["inputs"]), c["n"]) for c in llm._calls] == [(3, 1), (2, 1), (1, 1)]
    assert [r["judge_status"] for r in out] == ["ok", "ok", "ok"]
    assert [r["judge_attempts"] for r in out] == [1, 2, 3]
    assert out[2]["scores"]["factuality"] == 2.0
    assert out[2]["judge_raw"] == refuse_range_ok
    # the re-ask shows the failed answer and what was wrong with it
    retry = llm._calls[2]["inputs"][0]
    assert [m["role"] for m in retry] == ["user", "assistant", "user"]
    assert retry[1]["content"] == answer(9, 3, 3, 3, 3)
    assert "factuality" in retry[2]["content"] and "9" in retry[2]["content"]


def test_rows_that_stay_failed_are_kept_with_raw_outputs() -> None:
    script = {
        "ok": [answer(4, 4, 4, 4, 4)],
        "hopeless": ["no idea", "still no idea", "Factuality: 4\nStep coherence: 3"],
        "refuser": ["As an AI, I cannot do this."] * 3,
    }
    judge, _ = make_judge(script, max_retries=2)
    out = run(judge, ["ok", "hopeless", "refuser"])
    assert len(out) == 3
    hopeless, refuser = out[1], out[2]
    assert hopeless["judge_status"] == "parse_error"
    assert "strategy_coherence" in hopeless["judge_problem"]
    assert hopeless["judge_raw"] == ["no idea", "still no idea", "Factuality: 4\nStep coherence: 3"]
    assert hopeless["judge_attempts"] == 3 and hopeless["judge_samples"] == 0
    assert hopeless["scores"] == dict.fromkeys(DIMS)  # every key present, no number invented
    assert hopeless["rationales"] == dict.fromkeys(DIMS)
    assert refuser["judge_status"] == "refused" and len(refuser["judge_raw"]) == 3


def test_no_retries_when_max_retries_is_zero() -> None:
    judge, llm = make_judge({"bad": ["nothing useful"]}, max_retries=0)
    [row] = run(judge, ["bad"])
    assert len(llm._calls) == 1
    assert row["judge_status"] == "parse_error" and row["judge_raw"] == ["nothing useful"]


def test_samples_are_averaged_with_spread_and_failed_samples_retried_alone() -> None:
    script = {
        "t": [answer(4, 3, 5, 2, 4), "oops", answer(2, 3, 4, 2, 5), answer(3, 3, 3, 2, 3)],
        "u": [answer(1, 1, 1, 1, 1), answer(1, 1, 1, 1, 1), answer(1, 1, 1, 1, 1)],
    }
    judge, llm = make_judge(script, samples=3)
    t, u = run(judge, ["t", "u"])
    assert [(len(c["inputs"]), c["n"]) for c in llm._calls] == [(2, 3), (1, 1)]
    samples = [(4, 3, 5, 2, 4), (2, 3, 4, 2, 5), (3, 3, 3, 2, 3)]
    for k, dim in enumerate(DIMS):
        values = [s[k] for s in samples]
        assert t["scores"][dim] == pytest.approx(statistics.fmean(values))
        assert t["score_spread"][dim] == pytest.approx(statistics.pstdev(values))
    assert t["judge_samples"] == 3 and t["judge_attempts"] == 4
    assert t["judge_raw"][1] == "oops"  # sample by sample: sample 1's failed attempt, its retry
    assert u["score_spread"] == dict.fromkeys(DIMS, 0.0) and u["judge_attempts"] == 3


def test_samples_partly_failed_average_what_parsed() -> None:
    script = {"t": [answer(5, 5, 5, 5, 5), "junk", "more junk"]}
    judge, _ = make_judge(script, samples=2, max_retries=1)
    [row] = run(judge, ["t"])
    assert row["judge_status"] == "ok" and row["judge_samples"] == 1
    assert row["scores"] == dict.fromkeys(DIMS, 5.0)
    assert row["judge_raw"] == [answer(5, 5, 5, 5, 5), "junk", "more junk"]


def test_truncation_is_detected_from_token_statistics() -> None:
    cut = '{"factuality": {"score": 4, "rationale": "The trace correctly derives the'
    script = {
        "at-budget": [[cut, BUDGET], [answer(4, 4, 4, 4, 4), 60]],
        "under-budget": [[cut, 40], [cut, 40]],
        "complete-at-budget": [[answer(3, 3, 3, 3, 3), BUDGET]],
        "cut-twice": [[cut, BUDGET], [cut, BUDGET]],
    }
    judge, llm = make_judge(script, max_retries=1)
    out = {r["generation"]: r for r in run(judge, list(script))}
    assert out["at-budget"]["judge_status"] == "ok"
    assert out["at-budget"]["judge_raw"] == [cut, answer(4, 4, 4, 4, 4)]
    assert out["under-budget"]["judge_status"] == "parse_error"
    assert out["complete-at-budget"]["judge_status"] == "ok"
    assert out["cut-twice"]["judge_status"] == "truncated"
    assert "missing" in out["cut-twice"]["judge_problem"]
    # a truncated answer is re-asked fresh, with a request for brevity, not shown back
    retries = {_trace_of(m): m for m in llm._calls[1]["inputs"]}
    assert (
        len(retries["at-budget"]) == 1 and "ran out of space" in retries["at-budget"][0]["content"]
    )
    assert [m["role"] for m in retries["under-budget"]] == ["user", "assistant", "user"]


def test_budget_falls_back_to_generate_default() -> None:
    llm = ScriptedLLM(script={"t": [["{", BUDGET]]})  # no generation_kwargs
    judge = ReasoningJudge(llm=llm, max_retries=0)
    judge.load()
    [row] = run(judge, ["t"])
    assert row["judge_status"] == "truncated"


def test_missing_trace_is_kept_without_calling_the_llm() -> None:
    judge, llm = make_judge({"t": [answer(4, 4, 4, 4, 4)]})
    out = run(judge, ["t", None])
    assert len(llm._calls[0]["inputs"]) == 1
    assert out[1]["judge_status"] == "parse_error" and out[1]["judge_attempts"] == 0
    assert out[1]["judge_raw"] == [] and "no trace" in out[1]["judge_problem"]


def test_llm_exception_keeps_rows_and_first_results() -> None:
    script = {"ok": [answer(4, 4, 4, 4, 4)], "bad": ["junk"]}
    judge, _ = make_judge(script, max_retries=1, fail_calls=[2])
    ok, bad = run(judge, ["ok", "bad"])
    assert ok["judge_status"] == "ok"
    assert bad["judge_status"] == "failed"  # its last attempt: the call itself failed
    assert "judge server went away" in bad["judge_problem"]
    assert bad["judge_raw"] == ["junk", ""]


def test_upstream_metadata_is_kept() -> None:
    judge, _ = make_judge({"t": [answer(4, 4, 4, 4, 4)]})
    rows = [{"instruction": "p", "generation": "t", "distilabel_metadata": {"raw_output_gen": "x"}}]
    [row] = next(judge.process(rows))
    meta = row["distilabel_metadata"]
    assert meta["raw_output_gen"] == "x"
    assert meta[f"raw_input_{judge.name}"][0]["role"] == "user"
    assert meta[f"statistics_{judge.name}"]["output_tokens"] > 0


def test_judge_from_spec() -> None:
    config = JudgeConfig(
        model="some/judge",
        backend="openai",
        scale=(0, 10),
        dimensions=["factuality", {"name": "cites_sources", "rubric": "Does it cite sources?"}],
        samples=3,
        max_retries=4,
        generation={"temperature": 0.7, "max_new_tokens": 512},
    )
    spec = JudgeSpec.resolve(config)
    judge = judge_from_spec(spec, ScriptedLLM(script={}), name="judge_traces")
    assert judge.name == "judge_traces"
    assert judge.dimension_names == ["factuality", "cites_sources"]
    assert judge.dimensions[1]["rubric"] == "Does it cite sources?"
    assert judge.scale == (0, 10) and judge.samples == 3 and judge.max_retries == 4
    schema = judge.get_structured_output()
    assert schema["required"] == ["factuality", "cites_sources"]

    class Tagged(ReasoningJudge):
        tag: str

    sub = judge_from_spec(spec, ScriptedLLM(script={}), task_class=Tagged, tag="x")
    assert isinstance(sub, Tagged) and sub.tag == "x" and sub.samples == 3


def test_num_generations_is_refused_for_samples() -> None:
    """Dimensions and scale are the recipe's to check (``JudgeConfig``); what the Task
    refuses is its own: repeated judgments are ``samples``, never extra rows."""
    judge = ReasoningJudge(llm=ScriptedLLM(script={}), num_generations=3)
    with pytest.raises(ValueError, match="samples"):
        judge.load()


# --------------------------------------------------------------------------- pipeline


def test_runs_in_a_pipeline_and_failed_batches_survive_parquet(tmp_path: Path) -> None:
    """distilabel writes each batch to parquet: an all-failed batch must still be writable
    (an empty dict column would be a struct with no fields, which parquet refuses)."""
    from distilabel.pipeline import Pipeline
    from distilabel.steps import LoadDataFromDicts

    script = {f"bad{i}": ["junk"] for i in range(6)}  # every row of the buffer fails
    data = [{"instruction": "p", "generation": t} for t in script]
    with Pipeline(name="judge-test", cache_dir=tmp_path / "cache") as pipeline:
        load = LoadDataFromDicts(data=data, batch_size=4)
        judge = ReasoningJudge(
            llm=ScriptedLLM(script=script, generation_kwargs={"max_new_tokens": BUDGET}),
            max_retries=0,
            input_batch_size=4,
        )
        load >> judge
    distiset = pipeline.run(use_cache=False)
    rows = distiset["default"]["train"].to_list()
    assert len(rows) == 6
    for row in rows:
        assert row["judge_status"] == "parse_error"
        assert row["judge_raw"] == ["junk"]
        assert row["scores"] == dict.fromkeys(DIMS)


# --------------------------------------------------------------------------- real model


def _tiny_model(path: Path) -> Path:
    """A random 2-layer Llama and a byte-level BPE tokenizer trained here: real weights,
    real generation, garbage output."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [answer(4, 3, 5, 2, 4), "Grade the reasoning in one solution trace."] * 50
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    fast.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    fast.save_pretrained(path)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def test_real_tiny_model_garbage_is_kept_not_scored(tmp_path: Path) -> None:
    from distilabel.models.llms import TransformersLLM

    model_dir = _tiny_model(tmp_path / "tiny")
    llm = TransformersLLM(
        model=str(model_dir),
        device="cpu",
        generation_kwargs={"max_new_tokens": 32, "temperature": 1.0},
    )
    judge = ReasoningJudge(llm=llm, samples=2, max_retries=1)
    judge.load()
    rows = [
        {"instruction": "What is 2+2?", "generation": "2+2=4, so the answer is 4."},
        {"instruction": "Solve x^2=9.", "generation": "x=3 or x=-3."},
        {"instruction": "Is 7 prime?", "generation": "7 has no divisors but 1 and 7: prime."},
    ]
    out = next(judge.process(rows))
    assert len(out) == 3
    for row, original in zip(out, rows, strict=True):
        assert row["generation"] == original["generation"]
        assert row["judge_status"] in {"parse_error", "truncated", "refused", "empty"}
        assert row["judge_problem"]
        assert row["judge_attempts"] == 4 == len(row["judge_raw"])  # 2 samples x (1 + 1 retry)
        assert all(isinstance(raw, str) for raw in row["judge_raw"])
        assert any(raw for raw in row["judge_raw"])
        assert row["scores"] == dict.fromkeys(DIMS)
        assert row["model_name"] == str(model_dir)


class _Prefixed(ReasoningJudge):
    """A subclass overriding process in a module with postponed annotations (this one)."""

    def process(self, inputs: StepInput) -> StepOutput:  # type: ignore[override]
        for batch in super().process(inputs):
            yield [{**row, "seen_by_subclass": True} for row in batch]


def test_subclass_with_postponed_annotations_runs_in_a_pipeline(tmp_path: Path) -> None:
    from distilabel.pipeline import Pipeline
    from distilabel.steps import LoadDataFromDicts

    script = {"t": [answer(2, 2, 2, 2, 2)]}
    with Pipeline(name="judge-subclass", cache_dir=tmp_path / "cache") as pipeline:
        load = LoadDataFromDicts(data=[{"instruction": "p", "generation": "t"}])
        load >> _Prefixed(llm=ScriptedLLM(script=script))
    [row] = pipeline.run(use_cache=False)["default"]["train"].to_list()
    assert row["judge_status"] == "ok" and row["seen_by_subclass"] is True


def test_a_greedy_judge_is_not_asked_the_same_prompt_again() -> None:
    """An empty answer is re-asked with the same prompt; greedy decoding would answer the
    same, so that retry is skipped. A parse error is re-asked with the problem shown,
    which is a new prompt, so it is retried."""
    judge, llm = make_judge(
        {"quiet": ["", "never asked"], "garbled": ["no scores here", answer(4, 4, 4, 4, 4)]},
        max_retries=2,
    )
    llm.generation_kwargs = {"max_new_tokens": BUDGET, "temperature": 0.0}
    quiet, garbled = run(judge, ["quiet", "garbled"])
    assert quiet["judge_status"] == "empty" and quiet["judge_attempts"] == 1
    assert garbled["judge_status"] == "ok" and garbled["judge_attempts"] == 2
    assert len(llm._calls) == 2  # first round, then the one retry that could help
