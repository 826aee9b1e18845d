"""The dataset card: Hub metadata (configs, license, task, size, tags) and a body that says
what the data is, how it was judged, and what its deltas look like.

Built with huggingface_hub's ``DatasetCard``/``DatasetCardData`` so the front matter is
exactly what the Hub and ``datasets`` parse: the ``configs:`` block is what makes
``load_dataset(repo, "pairs")`` and ``load_dataset(repo, "traces")`` work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jinja2
from huggingface_hub import DatasetCard, DatasetCardData

from prefdelta.builders.columns import agreement_line
from prefdelta.builders.judge.validity import validity_markdown
from prefdelta.builders.panel import panel_markdown
from prefdelta.push.card_template import CARD_TEMPLATE
from prefdelta.recipe.reads import JudgeReads, describe_reads
from prefdelta.schema import PAIRS, REVIEWS, TRACES, config_dir, size_category

if TYPE_CHECKING:
    from prefdelta.push.build_folder import Build
    from prefdelta.push.plots import Plot

TASK_CATEGORIES = ["text-generation"]
TAGS = ["preference", "dpo", "reasoning", "llm-as-a-judge", "synthetic", "prefdelta"]


def configs_metadata(splits: list[str]) -> list[dict[str, Any]]:
    """The `configs:` block: `pairs` (default) with its splits, and `traces`."""
    return [
        {
            "config_name": PAIRS,
            "default": True,
            "data_files": [{"split": s, "path": f"{config_dir(PAIRS)}{s}-*"} for s in splits],
        },
        {
            "config_name": TRACES,
            "data_files": [{"split": "train", "path": f"{config_dir(TRACES)}train-*"}],
        },
    ]


# The agreement section `prefdelta review pull` writes (and rewrites) between these markers.
REVIEWS_SECTION_START = "<!-- prefdelta:reviews:start -->"
REVIEWS_SECTION_END = "<!-- prefdelta:reviews:end -->"


def reviews_config() -> dict[str, Any]:
    """The `reviews` entry of the `configs:` block: human answers pulled from Argilla."""
    return {
        "config_name": REVIEWS,
        "data_files": [{"split": "train", "path": f"{config_dir(REVIEWS)}train-*"}],
    }


def card_data(build: Build, splits: dict[str, int], license: str) -> DatasetCardData:
    return DatasetCardData(
        license=license,
        task_categories=TASK_CATEGORIES,
        size_categories=[size_category(sum(splits.values()))],
        pretty_name=build.recipe.name,
        tags=TAGS,
        configs=configs_metadata(list(splits)),
    )


def _num(x: Any) -> str:
    if x is None or isinstance(x, jinja2.Undefined):
        return "—"
    return f"{x:+.3f}" if isinstance(x, float) else str(x)


def _score(x: Any) -> str:
    return "—" if x is None or isinstance(x, jinja2.Undefined) else f"{x:.3f}"


def _cell(text: Any) -> str:
    return "—" if text in (None, "") else _oneline(text).replace("|", "\\|")


def _oneline(text: Any) -> str:
    return " ".join(str(text).split())


def _snippet_dimension(dims: list[str]) -> str:
    return "step_coherence" if "step_coherence" in dims else dims[0]


def _token_rows(build: Build) -> list[tuple[str, str, dict[str, int]]]:
    tokens = build.summary.get("tokens")
    if not tokens:
        return []
    rows = [
        (name, build.recipe.generators[name].model, usage)
        for name, usage in tokens["generators"].items()
        if name in build.recipe.generators
    ]
    return [*rows, ("judge", build.recipe.judge.model, tokens["judge"])]


def _judge_reads(reads: JudgeReads | None, summary: dict[str, Any]) -> str:
    """What the judge read of each trace (``judge.reads``), with the bound it was held to
    (unset: the whole trace, bounded where the build knew the judge's context)."""
    bound = (summary.get("judge_reads") or {}).get("bound")
    why = (summary.get("judge_reads") or {}).get("bound_why")
    if reads is None and bound is None:
        return describe_reads(None)
    return (reads or JudgeReads()).describe(None if bound is None else f"{bound:,} tokens: {why}")


def render_card(
    build: Build,
    *,
    splits: dict[str, int],
    plots: list[Plot],
    dataset_ref: str,
    license: str,
    sort_by: str = "delta",
) -> str:
    """The README.md text of the published dataset."""
    recipe, summary = build.recipe, build.summary
    env = jinja2.Environment(undefined=jinja2.ChainableUndefined, autoescape=False)
    env.filters.update(num=_num, score=_score, cell=_cell, oneline=_oneline)
    data = card_data(build, splits, license)
    generators = []
    for name, g in recipe.generators.items():
        if recipe.pairing.strategy == "generators":
            role = "chosen" if name == recipe.pairing.chosen else "rejected"
            role = role if name in recipe.pairing.generator_names else "unused"
        elif recipe.pairing.strategy == "columns":
            role = f"original {name}"  # the dataset's own label
        else:
            role = "pool" if name in recipe.pairing.pool else "unused"
        stats = (summary.get("generators") or {}).get(name) or {}
        generators.append(
            {
                "name": name,
                "model": g.model,
                "backend": g.backend,
                "role": role,
                "description": g.description,
                "mean_score": stats.get("mean_score"),
                "accuracy": stats.get("accuracy"),
            }
        )
    dims = build.dimensions
    low, high = recipe.judge.scale
    delta_stats = summary.get("delta_stats") or {}
    ordered = [(f"delta_{d}", delta_stats.get(d)) for d in dims] + [
        ("delta", delta_stats.get("delta"))
    ]
    empty = dict.fromkeys(("mean", "min", "q25", "median", "q75", "max"))
    test_note = None
    if "test" in splits:
        test_note = (
            "The `test` split holds whole prompts (chosen by a seeded hash of `prompt_id`): "
            "no prompt is in both splits. `traces` is not split."
        )
    body = env.from_string(CARD_TEMPLATE).render(
        card_data=data.to_yaml(),
        name=recipe.name,
        description=recipe.description,
        dimensions=dims,
        aggregate="weighted mean" if recipe.delta.method == "weighted" else "mean",
        recipe_hash=build.recipe_hash,
        ref=dataset_ref,
        sort_by=sort_by,
        snippet_dimension=_snippet_dimension(dims),
        snippet_threshold=2 if high - low >= 2 else 1,
        generators=generators,
        pairing=recipe.pairing.strategy,
        tie_policy=recipe.pairing.tie_policy,
        judge=recipe.judge,
        summary=summary,
        splits=splits,
        judge_reads=_judge_reads(recipe.judge.reads, summary),
        over_context=sum(((summary.get("judge_reads") or {}).get("over_context") or {}).values()),
        judge_status=sorted((summary.get("judge_status") or {}).items()),
        score_kinds=sorted((summary.get("score_kind") or {}).items()),
        panel=panel_markdown(summary["judge_panel"]) if summary.get("judge_panel") else None,
        validity=validity_markdown(summary["judge_validity"])
        if summary.get("judge_validity")
        else None,
        lost=sorted((summary.get("unjudged_pairs") or {}).items()),
        labels=agreement_line(summary["label_agreement"])
        if summary.get("label_agreement")
        else None,
        test_note=test_note,
        tokens=_token_rows(build),
        delta_stats=[(c, s or empty) for c, s in ordered],
        dimension_plots=[p for p in plots if not p.path.startswith("plots/pair_")],
        unplotted=[c for c, _ in ordered if f"plots/{c}.png" not in {p.path for p in plots}],
        weights=sorted((recipe.delta.weights or {}).items())
        if recipe.delta.method == "weighted"
        else [],
        generator_pairs=list((summary.get("generator_pairs") or {}).items()),
        pair_plots=[p for p in plots if p.path.startswith("plots/pair_")],
    )
    # Round-trip through DatasetCard: what we write is what the Hub and `datasets` will parse.
    card = DatasetCard(body)
    if card.data.to_dict().get("configs") != data.to_dict()["configs"]:
        raise RuntimeError("the card's metadata did not survive a parse; this is a bug")
    return str(card)
