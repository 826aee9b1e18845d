"""Cache identity: each recipe field declares whether it counts toward the recipe hash and
the result store's keys, and the hashes and keys of existing recipes never change."""

from __future__ import annotations

import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from prefdelta.builders import keys
from prefdelta.recipe import (
    BuildRecipe,
    Dimension,
    GeneratorConfig,
    JudgeConfig,
    load_recipe,
    parse_recipe,
)
from prefdelta.recipe.endpoints import GIVEN_FIELDS
from prefdelta.recipe.identity import IDENTITIES, identity_body, identity_of

ROOT = Path(__file__).resolve().parents[1]


def _recipe_models(model: type[BaseModel]) -> set[type[BaseModel]]:
    """``model`` and every model any of its fields holds, at any depth."""
    found = {model}

    def walk(tp: object) -> None:
        if isinstance(tp, type) and issubclass(tp, BaseModel) and tp not in found:
            found.add(tp)
            for field in tp.model_fields.values():
                walk(field.annotation)
        for arg in typing.get_args(tp):
            walk(arg)

    for field in model.model_fields.values():
        walk(field.annotation)
    return found


def test_every_field_of_every_recipe_model_declares_its_identity() -> None:
    models = _recipe_models(BuildRecipe)
    assert {GeneratorConfig, JudgeConfig}.issubset({m for m in models})
    assert len(models) >= 10  # recipe, prompts, generators, decoding, price, judge, ...
    unclassified = [
        f"{m.__name__}.{name}"
        for m in models
        for name in m.model_fields
        if identity_of(m, name) not in IDENTITIES
    ]
    assert unclassified == [], "declare each with content(...), operational(...), ..."


def test_a_field_without_an_identity_is_refused_not_hashed() -> None:
    class Undeclared(BaseModel):
        size: int = 1

    with pytest.raises(TypeError, match=r"Undeclared\.size declares no identity"):
        identity_body(Undeclared(), "hash")


# Computed by the code before the recipe became a package (commit 02cdc0f), when the hash
# and the keys' exclusions were two hand-written lists: a recipe hash (tag, review dataset
# name) or cache key that changes makes every existing build recompute, or every tag move.
# traces: keys.trace_key(generator, "What is 2 + 2?", 1); judge:
# keys.judge_fingerprint(judge, "judge template text").
# The papers' judge, GPT-OSS-120b, reasons before it answers since judge.reasoning (auto
# turns it on for its family): a judgment asked that way is a different one, so its key moved
# (from fac6fcd0...), while the recipes' hashes and trace keys stayed.
OPENR1_JUDGE = "df03802fd092d6dd2d555dca1fedf340e91ad20f956fd173f8e674c993e5acb0"
RECORDED = {
    "recipes/demo.yaml": (
        "6d482fe59c30272bd5cbc1b87e4afc8de39a5062c9324c981026cda39bb0f04d",
        {
            "careful": "c09148bcdb36ec03c0c5d8eb0a41e82fe73e3448595961591104ebf0f425d534",
            "hasty": "67842ca21d936ba6b5f2593a827391909c9db1bd53c7ecdfb33a4f83b2b68080",
        },
        "5ad3d0054b9489552b18ef110feb27311eed0b678270aed7987595269cacc9cc",
    ),
    # the paper recipes as first shipped, R1 regenerated through an API (the shipped ones read
    # R1's traces from the dataset now; their s1.1 keys and judge fingerprint are these)
    "tests/recipes/openr1-math-api.yaml": (
        "a47dfcadf588320dcfe11e136ac69985e19d56afeec25f1e2b02af19a62c048c",
        {
            "r1": "286e7372833198f4740f5b157b2a4afdc1b2fe4116b3276a35764365948cb17b",
            "s1-3b": "db0b1f012d8c891a48ef3b5cacf17a794ce90bbcbb62acbd747a40af359269e2",
        },
        OPENR1_JUDGE,  # GPT-OSS reasons now (judge.reasoning auto)
    ),
    "tests/recipes/openr1-math-ladder-api.yaml": (
        "d9cae42001b80b5805fc524a2faa0367704e0260244623572c57f0138c58822d",
        {
            "r1": "286e7372833198f4740f5b157b2a4afdc1b2fe4116b3276a35764365948cb17b",
            "s1-32b": "16cd9deab5a10170a1f8c6a017417452f4c9ace8eaca00262f98014e3ebecada",
            "s1-14b": "839a5a0d05d8a16a89a845dfa09a3ec7e384d39b94e5b53d3e397b4c1890428b",
            "s1-7b": "a041b8dc12668799e6fb2951b0196a3ab7dc793cd365cd55c748e562f8d15763",
            "s1-3b": "db0b1f012d8c891a48ef3b5cacf17a794ce90bbcbb62acbd747a40af359269e2",
        },
        OPENR1_JUDGE,  # GPT-OSS reasons now (judge.reasoning auto)
    ),
    "tests/recipes/every-key.yaml": (
        "46ddb8fac0f5934f919376287a36057884a7d4f306930567f998397eb0141bf3",  # + reasoning
        {
            "strong": "8fdc8401a5570ac9e60930ac5243d0ee32cb68b77f5949d7b65598bf862cca5a",
            "weak": "844340435f8c672518572db46e4b6d171856600c375f1581a474955b1e337ab1",
        },
        "d4b9178a3b816e53fb50a6ca112d121600d21998fe63a15b912fcae2c318ef61",
    ),
}


@pytest.mark.parametrize("path", sorted(RECORDED))
def test_recipe_hashes_and_cache_keys_never_change(path: str) -> None:
    recipe = load_recipe(ROOT / path)
    content_hash, traces, judge = RECORDED[path]
    assert recipe.content_hash() == content_hash
    assert {
        name: keys.trace_key(g, "What is 2 + 2?", 1) for name, g in recipe.generators.items()
    } == traces
    assert keys.judge_fingerprint(recipe.judge, "judge template text") == judge


def _unset(model: type[BaseModel], given: dict[str, object], where: str) -> list[str]:
    """Dotted names of ``model``'s fields (and its nested models') absent from ``given``."""
    missing = []
    for name, field in model.model_fields.items():
        # a model, or an optional one
        kinds = [field.annotation]
        if typing.get_origin(field.annotation) in (typing.Union, types.UnionType):
            kinds += typing.get_args(field.annotation)
        nested = [k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)]
        if name not in given:
            missing.append(where + name)
        elif nested:
            missing += _unset(nested[0], typing.cast(dict, given[name]), f"{where}{name}.")
    return missing


def test_the_every_key_recipe_sets_every_key() -> None:
    """So that the regression above covers every field. Where two keys exclude each other
    (a Hub dataset or a file, a repo or a folder, chosen/rejected or a pool) it sets the
    first."""
    data = load_recipe(ROOT / "tests/recipes/every-key.yaml").model_dump(exclude_unset=True)
    missing = _unset(BuildRecipe, data, "")
    missing += _unset(GeneratorConfig, data["generators"]["strong"], "generators.strong.")
    missing += _unset(JudgeConfig, data["judge"], "judge.")
    missing += _unset(Dimension, data["judge"]["dimensions"][2], "judge.dimensions[2].")
    # a model generator refuses a dataset generator's columns (the hashes above pin that,
    # unset, they change nothing)
    given = [f"generators.strong.{f}" for f in GIVEN_FIELDS]
    # an API model refuses GPUs (the judge is walked twice: in the recipe, and on its own)
    given += ["generators.strong.resources.gpus", "judge.resources.gpus", "judge.resources.gpus"]
    # options added later (`later`: counted only when set) that change what the judge is
    # asked; their own tests show that setting them changes the keys they should (each is
    # found twice: within the recipe, and within its judge block); judge.reads is set in
    # test_judge_reads_identity
    judge_later = ["judge.show_reference", "judge.panel", "judge.reads"] * 2
    # its judge is an openai one, which refuses vLLM's reasoning parser (found twice: in
    # the recipe's walk and in the judge's)
    judge_later += ["judge.reasoning_parser"] * 2
    assert sorted(missing) == sorted(
        [*given, *judge_later, "pairing.pool", "prompts.path", "publish.folder"]
    )


def test_the_keys_leave_out_what_the_fields_declare() -> None:
    """The lists keys.py wrote by hand before the fields declared them."""
    generator_fields = {
        "batch_size",
        "concurrency",
        "base_url",
        "api_key",
        "description",
        "request_timeout",
        "request_retries",
        "price",
        "resources",
    }
    assert generator_fields == keys.GENERATOR_OPERATIONAL
    judge_fields = {
        "batch_size",
        "concurrency",
        "base_url",
        "api_key",
        "max_retries",
        "response_format",
        "request_timeout",
        "request_retries",
        "template",
        "price",
        "resources",
    }
    assert judge_fields == keys.JUDGE_OPERATIONAL


def test_an_operational_field_changes_the_hash_but_no_cache_key() -> None:
    text = (ROOT / "recipes/demo.yaml").read_text(encoding="utf-8")
    base = parse_recipe(text, base_dir=ROOT / "recipes")
    tuned = parse_recipe(text.replace("batch_size: 16", "batch_size: 4"), base_dir=ROOT / "recipes")
    priced = parse_recipe(
        text.replace(
            "  max_retries: 0", "  max_retries: 0\n  price: {input_per_mtok: 1, output_per_mtok: 2}"
        ),
        base_dir=ROOT / "recipes",
    )
    fingerprint = keys.judge_fingerprint
    assert fingerprint(tuned.judge, "t") == fingerprint(base.judge, "t")
    assert tuned.content_hash() != base.content_hash()  # the hash names the recipe as written
    assert priced.content_hash() == base.content_hash()  # what a model costs: neither
    assert fingerprint(priced.judge, "t") == fingerprint(base.judge, "t")


def test_judge_reads_identity() -> None:
    """``judge.reads`` names the recipe (its hash) but not the judge's fingerprint: the text
    the judge reads is what each judgment key hashes (tests/test_judge_reads.py shows a
    change re-judging only the traces whose read text it changes). So the paper recipes,
    which set it, keep the judge fingerprint their API-era builds stored."""
    text = (ROOT / "tests/recipes/every-key.yaml").read_text(encoding="utf-8")
    base = parse_recipe(text, base_dir=ROOT / "tests/recipes")
    read = parse_recipe(
        text.replace(
            "  system_prompt: You are a strict grader.\n",
            "  system_prompt: You are a strict grader.\n"
            "  reads: {part: reasoning, max_tokens: 100, marker: '[{cut}]', "
            "over_context: cut, context_tokens: 8192, tokenizer: org/tok}\n",
        ),
        base_dir=ROOT / "tests/recipes",
    )
    assert read.judge.reads is not None and read.judge.reads.tokenizer == "org/tok"
    assert read.content_hash() != base.content_hash()
    assert keys.judge_fingerprint(read.judge, "t") == keys.judge_fingerprint(base.judge, "t")
    for name in ("openr1-math-delta", "openr1-math-ladder"):
        paper = load_recipe(ROOT / "recipes" / f"{name}.yaml")
        assert paper.judge.reads is not None
        assert (
            keys.judge_fingerprint(paper.judge, "judge template text")
            == RECORDED["tests/recipes/openr1-math-api.yaml"][2]
        )
