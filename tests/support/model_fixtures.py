"""Model fixtures: the tiny random Llama (also as a GGUF file), and a loopback chat server.

Why a tiny model: the suite must run offline, so tests need a model that TRL's trainers and
distilabel's ``TransformersLLM`` accept and that builds in well under a second. Why a real
server: the openai backend is proven by distilabel's real client talking HTTP (retries on
429, the Authorization header, how many requests overlap), not by mocks that would only
agree with us. Import what a test module uses:
``from support.model_fixtures import tiny_model_dir``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# ChatML, as SmolLM2 uses, without a default system prompt. It renders a prompt the same way
# alone and followed by a completion, which TRL's DPO/KTO tokenization relies on.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]


def _training_text() -> list[str]:
    """A small fixed corpus: prose, arithmetic and chat markup, so merges look like the data."""
    prose = (
        "Reasoning is the process of drawing conclusions from facts. A careful answer states "
        "what is known, works through each step, checks the result and then gives the final "
        "answer. The capital of France is Paris. Water boils at one hundred degrees Celsius. "
        "A preference dataset pairs a chosen answer with a rejected answer for the same prompt, "
        "and a judge scores each answer on factuality, coherence and precision."
    )
    lines = [prose] * 4
    for a in range(1, 13):
        for b in range(1, 13):
            lines.append(f"What is {a} + {b}? Step 1: add {a} and {b}. The answer is {a + b}.")
            lines.append(
                f"Compute {a} * {b}. We multiply to get {a * b}, so the answer is {a * b}."
            )
    lines.append("<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there!<|im_end|>\n")
    return lines


def _train_tokenizer(vocab_size: int, max_length: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_training_text(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<|endoftext|>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        model_max_length=max_length,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(
    directory: str | os.PathLike[str],
    *,
    seed: int = 0,
    vocab_size: int = 512,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    max_length: int = 4096,
) -> Path:
    """Write a tiny random ``LlamaForCausalLM`` with a chat tokenizer to ``directory``.

    Same arguments, same bytes: the tokenizer training is deterministic and the weights come
    from a forked torch RNG seeded with ``seed`` (the caller's RNG state is left alone).
    ``max_length`` is the model's context: 4096 holds every judge prompt the tests send
    (the judge's context is checked by default); rope positions have no weights, so it
    changes no weight and no output.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(vocab_size, max_length)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in _SPECIAL_TOKENS}
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=max(1, num_heads // 2),
        max_position_embeddings=max_length,
        tie_word_embeddings=True,
        bos_token_id=ids["<|im_start|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|pad|>"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with a ChatML tokenizer, built once per session (read-only)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), seed=0)


@pytest.fixture(scope="session")
def short_context_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a 512-token context: prompts and traces the tests write overflow
    it (read-only)."""
    return build_tiny_model(tmp_path_factory.mktemp("short-context-model"), max_length=512)


@pytest.fixture(scope="session")
def tiny_gguf(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model written as an F32 GGUF file, so conversion tests run in about a second."""
    return write_gguf(tiny_model_dir, tmp_path_factory.mktemp("tiny-gguf") / "tiny.gguf")


def _permute(weights: Any, n_head: int) -> Any:
    """llama.cpp's q/k row order, which transformers undoes when it reads a llama GGUF."""
    rows = weights.shape[0]
    return (
        weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def write_gguf(model_dir: Path, out: Path) -> Path:
    """Write a Llama folder (ByteLevel BPE tokenizer, tied embeddings) as a GGUF file.

    Only what ``from_pretrained(..., gguf_file=...)`` reads for a llama model; it mirrors
    llama.cpp's converter so the round trip is exact.
    """
    import json

    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    cfg = json.loads((model_dir / "config.json").read_text())
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name(model_dir.name)
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    writer.add_rope_freq_base(cfg["rope_parameters"]["rope_theta"])
    writer.add_vocab_size(cfg["vocab_size"])
    tokens = [t for t, _ in sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])]
    special = {a["content"] for a in tok["added_tokens"]}
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens]
    )
    writer.add_token_merges(
        [" ".join(m) if isinstance(m, list) else m for m in tok["model"]["merges"]]
    )
    writer.add_bos_token_id(cfg["bos_token_id"])
    writer.add_eos_token_id(cfg["eos_token_id"])
    writer.add_pad_token_id(cfg["pad_token_id"])
    writer.add_chat_template((model_dir / "chat_template.jinja").read_text())
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
    }
    parts = {
        "input_layernorm": "attn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for i in range(cfg["num_hidden_layers"]):
        for hf, gg in parts.items():
            names[f"model.layers.{i}.{hf}.weight"] = f"blk.{i}.{gg}.weight"
    for name, tensor in load_file(str(model_dir / "model.safetensors")).items():
        data = tensor.astype(np.float32)
        if name.endswith("q_proj.weight"):
            data = _permute(data, heads)
        elif name.endswith("k_proj.weight"):
            data = _permute(data, kv_heads)
        writer.add_tensor(names[name], data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


@dataclass
class ChatServerState:
    """What the server saw, and how it behaves (tests set ``delay_s``, ``fail_first`` and
    its ``rate_limit_headers``, ``content``, ``refuse_types`` and ``refuse_status``,
    ``hold_after`` and the ``*_when`` answers). It ignores ``response_format`` as some servers do.
    ``reasoning``: returned beside the answer in the message's ``reasoning_field``, as vLLM's
    server does for a reasoning model."""

    delay_s: float = 0.05  # long enough for concurrent requests to overlap
    fail_first: int = 0  # answer this many requests with 429 before serving
    rate_limit_headers: dict[str, str] = field(default_factory=lambda: {"retry-after-ms": "10"})
    content: str | None = None  # the answer to every request; default: an echo
    content_by_model: dict[str, str] = field(default_factory=dict)  # per request's model
    refuse_types: set[str] = field(default_factory=set)  # response_format types to refuse
    refuse_status: int = 500  # the status of that refusal (llama-cpp-python's: 500)
    # by a text in the last user message: answer that HTTP status, or "" / None as content
    fail_when: dict[str, int] = field(default_factory=dict)
    blank_when: dict[str, str | None] = field(default_factory=dict)
    # by a text in the last user message: answer this content instead of ``content``
    content_when: dict[str, str] = field(default_factory=dict)
    # by a text in the last user message: answer 200 with this body as text/plain (not JSON)
    text_when: dict[str, str] = field(default_factory=dict)
    reasoning: str | None = None
    reasoning_field: str = "reasoning_content"
    logprobs: list[dict[str, Any]] | None = None  # each choice's logprobs.content, if any
    # by a text in the last user message: hold the request until this many requests to its
    # model have been answered (or 120 s have passed)
    hold_when: dict[str, int] = field(default_factory=dict)
    # answer this many requests, then hold every later one until this is set back to None
    hold_after: int | None = None
    admitted: int = 0
    answered: list[dict[str, Any]] = field(default_factory=list)  # bodies answered, in order
    refused: int = 0
    requests: int = 0
    rate_limited: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)
    user_agents: list[str | None] = field(default_factory=list)  # each request's User-Agent
    arrivals: list[float] = field(default_factory=list)  # each request's time.monotonic()


class ChatServer:
    """``POST /v1/chat/completions`` on 127.0.0.1, answering ``echo: <last user message>``."""

    def __init__(self) -> None:
        self.state = ChatServerState()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.url = ""

    async def _chat(self, request: Any) -> Any:
        from starlette.responses import JSONResponse, PlainTextResponse

        state = self.state
        state.requests += 1
        body = await request.json()
        state.bodies.append(body)
        state.auth.append(request.headers.get("authorization"))
        state.user_agents.append(request.headers.get("user-agent"))
        state.arrivals.append(time.monotonic())
        if state.fail_first > 0:
            state.fail_first -= 1
            state.rate_limited += 1
            return JSONResponse(
                {"error": {"message": "rate limited", "type": "rate_limit_exceeded"}},
                status_code=429,
                headers=state.rate_limit_headers,
            )
        last = str(body["messages"][-1]["content"])
        for needle, status in state.fail_when.items():
            if needle in last:
                return JSONResponse(
                    {"error": {"message": f"no: {needle}", "type": "invalid_request_error"}},
                    status_code=status,
                )
        for needle, text in state.text_when.items():
            if needle in last:
                return PlainTextResponse(text)
        kind = (body.get("response_format") or {}).get("type")
        if kind in state.refuse_types:  # as llama-cpp-python's server refuses json_schema
            state.refused += 1
            message = f"response_format.type: Input should be 'text' or 'json_object', got {kind!r}"
            return JSONResponse(
                {"error": {"message": message, "type": "internal_server_error"}},
                status_code=state.refuse_status,
            )
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            while state.hold_after is not None and state.admitted >= state.hold_after:
                await asyncio.sleep(0.01)
            state.admitted += 1
            for needle, count in state.hold_when.items():
                if needle in last:
                    deadline = time.monotonic() + 120
                    while time.monotonic() < deadline:
                        if sum(b["model"] == body["model"] for b in state.answered) >= count:
                            break
                        await asyncio.sleep(0.01)
            await asyncio.sleep(state.delay_s)
        finally:
            state.in_flight -= 1
        text = (
            state.content_by_model.get(body.get("model", ""))
            or state.content
            or f"echo: {body['messages'][-1]['content']}"
        )
        text = next((c for needle, c in state.content_when.items() if needle in last), text)
        for needle, blank in state.blank_when.items():
            if needle in last:
                text = blank  # type: ignore[assignment]
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if state.reasoning is not None:
            message[state.reasoning_field] = state.reasoning
        state.answered.append(body)
        choices = [
            {
                "index": i,
                "message": message,
                "finish_reason": "stop",
                "logprobs": None if state.logprobs is None else {"content": state.logprobs},
            }
            for i in range(body.get("n") or 1)
        ]
        return JSONResponse(
            {
                "id": f"chatcmpl-{state.requests}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", ""),
                "choices": choices,
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
            }
        )

    def start(self) -> ChatServer:
        import uvicorn
        from starlette.applications import Starlette
        from starlette.routing import Route

        app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the loopback chat server did not start")
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    """A fresh loopback chat server for this test (starts in a few milliseconds)."""
    server = ChatServer().start()
    yield server
    server.stop()


def loaded_judge(config: Any) -> Any:
    """A judge task for ``config`` (a ``JudgeConfig``), built as a build builds it (its
    schema, log-probs for expected scores, its schema dialect and reasoning) and loaded."""
    from prefdelta.builders.judge.spec import JudgeSpec, schema_for
    from prefdelta.builders.judge.task import judge_from_spec
    from prefdelta.builders.llms import make_llm

    llm = make_llm(
        config,
        config.generation,
        Path("."),
        json_schema=schema_for(config),
        logprobs=config.scoring == "expected",
        schema_dialect=config.response_format,
        reasoning=config.thinking,
    )
    judge = judge_from_spec(JudgeSpec.resolve(config), llm, name="judge")
    judge.load()
    return judge
