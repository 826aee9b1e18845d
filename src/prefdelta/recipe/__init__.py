"""Build recipes: the schema, loading, cross-checks and one-line errors.

A recipe is the whole declaration of a dataset: which prompts, which generators, how
traces are paired, how the judge scores them, how deltas aggregate and where the result
goes. The package, bottom up: :mod:`~prefdelta.recipe.rubrics` and
:mod:`~prefdelta.recipe.judgment` (the built-in rubrics and the judgment's JSON schema,
which the recipe validates against), :mod:`~prefdelta.recipe.identity` (which fields count
toward the recipe hash and the cache keys), :mod:`~prefdelta.recipe.base`,
:mod:`~prefdelta.recipe.endpoints`, :mod:`~prefdelta.recipe.judge` and :mod:`~prefdelta.recipe.schema` (the pydantic
models), :mod:`~prefdelta.recipe.checks` (names across sections, files),
:mod:`~prefdelta.recipe.errors` and :mod:`~prefdelta.recipe.load` (reading a file); the
generated reference pages are :mod:`prefdelta.docs`.
"""

from prefdelta.recipe.base import StrictModel
from prefdelta.recipe.checks import judge_template_problem, locate_model_file, resolve_path
from prefdelta.recipe.endpoints import (
    REQUEST_TIMEOUT_S,
    TOKENS_PER_TIMEOUT_S,
    GenerationParams,
    GeneratorConfig,
    ModelEndpoint,
    Price,
    Resources,
    request_timeout_s,
)
from prefdelta.recipe.errors import RecipeError
from prefdelta.recipe.judge import Dimension, JudgeConfig
from prefdelta.recipe.load import (
    describe_recipe_error,
    interpolate_env,
    load_recipe,
    parse_recipe,
    resolve_secret,
)
from prefdelta.recipe.schema import (
    PUBLISH_HUB_ONLY,
    BuildRecipe,
    DeltaConfig,
    PairingConfig,
    PromptsConfig,
    PublishConfig,
)

__all__ = [
    "PUBLISH_HUB_ONLY",
    "REQUEST_TIMEOUT_S",
    "TOKENS_PER_TIMEOUT_S",
    "BuildRecipe",
    "DeltaConfig",
    "Dimension",
    "GenerationParams",
    "GeneratorConfig",
    "JudgeConfig",
    "ModelEndpoint",
    "PairingConfig",
    "Price",
    "PromptsConfig",
    "PublishConfig",
    "RecipeError",
    "Resources",
    "StrictModel",
    "describe_recipe_error",
    "interpolate_env",
    "judge_template_problem",
    "load_recipe",
    "locate_model_file",
    "parse_recipe",
    "request_timeout_s",
    "resolve_path",
    "resolve_secret",
]
