"""The backend traits table, each rule that reads it, and the store keys and sampling seeds
that the shipped recipes plan (which moving the backends into their own modules must not
change)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from prefdelta.backends import TRAITS, Backend, calls_model, is_api, is_local, traits_of
from prefdelta.builders.build import plan_traces
from prefdelta.builders.keys import row_seed
from prefdelta.builders.llms import generation_kwargs, sampling_seed
from prefdelta.builders.prompts import load_prompts
from prefdelta.builders.traces import model_group
from prefdelta.recipe import GenerationParams, GeneratorConfig, RecipeError, load_recipe
from prefdelta.recipe import parse_recipe as parse

ROOT = Path(__file__).resolve().parents[1]
BACKENDS: tuple[Backend, ...] = get_args(Backend)
MODEL_BACKENDS = tuple(b for b in BACKENDS if calls_model(b))


def test_every_backend_has_one_row_of_traits() -> None:
    assert set(TRAITS) == set(BACKENDS)


def test_traits_say_what_each_rule_said_before() -> None:
    """Each set was spelled out at its call site before the table existed."""
    assert {b for b in BACKENDS if is_local(b)} == {"transformers", "gguf"}
    assert {b for b in BACKENDS if is_api(b)} == {"openai", "inference-endpoints"}
    assert {b for b in BACKENDS if TRAITS[b].shares_loaded_model} == {
        "transformers",
        "gguf",
        "vllm",
    }
    assert {b for b in BACKENDS if TRAITS[b].needs_file} == {"gguf"}
    # read from the prompts table: nothing to load, call, time out, or run concurrently
    assert {b for b in BACKENDS if not calls_model(b)} == {"dataset"}
    assert traits_of(["gguf"]) is None and traits_of("tranformers") is None


def _generator(backend: Backend) -> GeneratorConfig:
    model = "m.gguf" if TRAITS[backend].needs_file else "org/m"
    url = {"base_url": "http://localhost:1"} if is_api(backend) else {}
    return GeneratorConfig(model=model, backend=backend, **url)


@pytest.mark.parametrize("backend", MODEL_BACKENDS)
def test_steps_share_a_model_unless_it_is_served(backend: Backend) -> None:
    group = model_group(_generator(backend))
    assert (group is None) == is_api(backend)


@pytest.mark.parametrize("backend", MODEL_BACKENDS)
def test_local_backends_decode_with_transformers_parameters(backend: Backend) -> None:
    kwargs = generation_kwargs(backend, GenerationParams(temperature=0.5, max_new_tokens=4))
    assert ("repetition_penalty" in kwargs) == (backend in ("transformers", "gguf"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_base_url_applies_to_api_backends_only(backend: Backend) -> None:
    model = "m.gguf" if backend == "gguf" else "org/m"
    if backend in ("openai", "inference-endpoints"):
        assert GeneratorConfig(model=model, backend=backend, base_url="http://x").base_url
    else:
        with pytest.raises(ValueError, match="apply to API backends"):
            GeneratorConfig(model=model, backend=backend, base_url="http://x")


RECIPE: dict[str, Any] = {
    "name": "unit",
    "prompts": {"dataset": "org/problems", "column": "problem"},
    "generators": {"b": {"model": "org/b", "backend": "transformers"}},
    "pairing": {"chosen": "a", "rejected": ["b"]},
    "judge": {"model": "org/judge", "backend": "openai", "scale": [1, 5]},
}


@pytest.mark.parametrize(
    ("backend", "model", "problem"),
    [
        ("transformers", "./no-such-folder", "model folder not found"),
        ("vllm", "./no-such-folder", "model folder not found"),
        ("gguf", "./no-such.gguf", "model file not found"),
        ("openai", "./no-such-folder", None),
        ("inference-endpoints", "./no-such-folder", None),
        ("dataset", "./no-such-folder", None),  # a name for what wrote the traces
    ],
)
def test_local_model_files_are_checked_at_load(
    tmp_path: Path, backend: str, model: str, problem: str | None
) -> None:
    generator: dict[str, Any] = {"model": model, "backend": backend}
    if backend in ("openai", "inference-endpoints"):
        generator["base_url"] = "http://localhost:1"
    if backend == "dataset":
        generator["column"] = "traces"
    data = {**RECIPE, "generators": {"a": generator, **RECIPE["generators"]}}
    if problem is None:
        parse(yaml.safe_dump(data), base_dir=tmp_path)
        return
    with pytest.raises(RecipeError, match=problem):
        parse(yaml.safe_dump(data), base_dir=tmp_path)


def test_a_backend_that_is_not_a_name_is_one_clear_error(tmp_path: Path) -> None:
    data = {
        **RECIPE,
        "generators": {"a": {"model": "./m", "backend": ["gguf"]}, **RECIPE["generators"]},
    }
    with pytest.raises(RecipeError, match=r"generators\.a\.backend"):
        parse(yaml.safe_dump(data), base_dir=tmp_path)


# The values below were computed by the code before the backends moved into
# prefdelta.builders.llms (and row_seed into prefdelta.builders.keys): a build's store keys
# and sampling seeds must not change, or every stored trace would be generated again.


def _plan(recipe_name: str, prompt_count: int | None) -> tuple[Any, list[Any]]:
    shipped = ROOT / "recipes" / f"{recipe_name}.yaml"
    recipe = load_recipe(shipped if shipped.exists() else ROOT / "tests/recipes" / shipped.name)
    demo = load_recipe(ROOT / "recipes" / "demo.yaml")  # the Hub's prompts are not at hand
    prompts, _ = load_prompts(demo.prompts, demo.base_dir)
    return recipe, plan_traces(recipe, prompts[:prompt_count])


def _digest(values: list[Any]) -> str:
    return hashlib.sha256("\n".join(str(v) for v in values).encode()).hexdigest()


@pytest.mark.parametrize(
    ("recipe_name", "prompt_count", "expected"),
    [
        (
            "demo",
            None,
            {
                "n": 32,
                "first": [
                    (
                        "careful",
                        "bd806fd9da996bf3428d8ec3b618e21b55cd33507de0387fd076926e0f925da3",
                        2815489976857078204,
                        1712151767,
                    ),
                    (
                        "hasty",
                        "9d85af4a5d9ddeba5d0585f5fce67b3c918b41ad3092b03df68579dd6e738164",
                        9010908822959322131,
                        1502807860,
                    ),
                ],
                "keys": "d9dca156d7053844f1f94a9a44defc08279f5dd68295ce0975ebc7d3de247290",
                "seeds": "3086301bdf07a653fcb23df5fb7dad2a910c3b109eb818e4f041876ae0322a29",
                "sampling_seeds": {"careful": 3453783205, "hasty": 2146025448},
                "judge_sampling_seed": 2823655009,
            },
        ),
        (
            "openr1-math-api",  # the paper recipe as first shipped (R1 through an API)
            3,
            {
                "n": 6,
                "first": [
                    (
                        "r1",
                        "c5ddc0902960af0164feb5f261fc84800a6c49ae5fe53716575ef2e32b357657",
                        4594704243597404485,
                        1530920674,
                    ),
                    (
                        "s1-3b",
                        "5858670c3b4ff9a96501c1af66def3a8c22e1eef34914f89820621412ad4beb1",
                        2697203119310003664,
                        753094489,
                    ),
                ],
                "keys": "fa8682460314f91297f21aca317eb473302ab590022ae9e59b9f186dc0916148",
                "seeds": "c9dcb4d04054cb354c984867ae2adaf248e6c4bc9c502db6820f328d29ff2303",
                "sampling_seeds": {"r1": 1257136744, "s1-3b": 2704118717},
                "judge_sampling_seed": 1399624389,
            },
        ),
    ],
)
def test_store_keys_and_sampling_seeds_are_unchanged(
    recipe_name: str,
    prompt_count: int | None,
    expected: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("R1_BASE_URL", raising=False)  # the endpoint's URL is in its seed
    recipe, planned = _plan(recipe_name, prompt_count)
    keys = [t.key for t in planned]
    assert len(keys) == expected["n"]
    # trace key, the seed local sampling draws from, the seed an API request is sent
    assert [
        (t.generator, t.key, row_seed(t.key), row_seed(str(row_seed(t.key)), 0) >> 32)
        for t in planned[:2]
    ] == expected["first"]
    assert _digest(keys) == expected["keys"]
    assert _digest([row_seed(k) for k in keys]) == expected["seeds"]
    assert {
        name: sampling_seed(g, g.generation) for name, g in recipe.generators.items()
    } == expected["sampling_seeds"]
    assert sampling_seed(recipe.judge, recipe.judge.generation) == expected["judge_sampling_seed"]
