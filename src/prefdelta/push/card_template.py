"""The dataset card body (Jinja), kept apart from the code that fills it in.

A Python module rather than a data file so it ships with the package without touching
packaging metadata. ``{{ card_data }}`` is the YAML front matter huggingface_hub renders.
"""

CARD_TEMPLATE = """\
---
{{ card_data }}
---

# {{ name }}

{% if description %}{{ description }}

{% endif -%}
A reasoning preference dataset built with **prefdelta**, following *Decomposing the Delta:
What Do Models Actually Learn from Preference Pairs?* (arXiv 2604.08723). Each row of the
`pairs` config is a (chosen, rejected) pair of reasoning traces for one prompt, in TRL's
conversational format, with an LLM judge's scores of both traces on
{{ dimensions | length }} reasoning dimension{{ "s" if dimensions | length != 1 }}:

- **sample-level delta**: `delta_<dimension>` is the chosen trace's score minus the rejected
  trace's; `delta` is their {{ aggregate }}{% if weights %} (weights: {% for d, w in weights %}`{{ d }}` {{ "%g" | format(w) }}{{ ", " if not loop.last }}{% endfor %}; a dimension not listed weighs 0){% endif %};
- **generator-level delta**: `generator_delta` is the gap between the two generators' mean
  judge scores over the whole build (the same for every pair of a generator pair).

The `traces` config holds every generated trace with its scores, the judge's rationales and
raw output, and a `judge_status`: traces the judge failed on are kept there, not dropped.
`recipe.yaml` is the exact recipe (hash `{{ recipe_hash }}`).

## Load it

```python
from datasets import load_dataset

pairs = load_dataset("{{ ref }}", "pairs", split="train")

# only pairs whose {{ snippet_dimension }} delta is at least {{ snippet_threshold }}:
# the filter is pushed down into the parquet files, the other rows are never materialized
strong = load_dataset(
    "{{ ref }}", "pairs", split="train", filters=[("delta_{{ snippet_dimension }}", ">=", {{ snippet_threshold }})]
)

traces = load_dataset("{{ ref }}", "traces", split="train")
```

A `filters` that keeps no row makes `load_dataset` raise
`Instruction "train" corresponds to no data!`; `prefdelta.load_pairs` says instead which
filter emptied the split and what range the column holds.

With prefdelta, the top 30% of pairs by {{ snippet_dimension }} delta (ties broken by `pair_id`):

```python
import prefdelta

top = prefdelta.load_pairs("{{ ref }}", dimension="{{ snippet_dimension }}", top_fraction=0.3)
```

`prompt`, `chosen` and `rejected` are lists of `{role, content}` messages, which TRL's
`DPOTrainer` takes as they are. Pairs are stored highest `{{ sort_by }}` first (pairs without
a delta last, ties by `pair_id`), so a filter on `{{ sort_by }}` reads only the row groups
it keeps.

## Generators

| generator | model | backend | role | description | mean judge score | accuracy |
|---|---|---|---|---|---|---|
{% for g in generators -%}
| `{{ g.name }}` | `{{ g.model }}` | {{ g.backend }} | {{ g.role }} | {{ g.description | cell }} | {{ g.mean_score | score }} | {{ g.accuracy | score }} |
{% endfor %}
Pairing: **{{ pairing }}**; ties (equal aggregate scores) are {{ "dropped" if tie_policy == "drop" else "kept with delta 0" }}.
{% if labels %}
The pairs are the source dataset's own, every row with its chosen and rejected sides as it
labelled them; nothing was generated. {{ labels }}. `label_agrees` is true where the judge's
`delta` is above 0, false where it is below, null for a tie or a pair without a delta;
`load_pairs(..., agree_with_label=True)` keeps the pairs the judge agrees with.
{% endif %}
## Judge

`{{ judge.model }}` ({{ judge.backend }}), one call per trace scoring every dimension on an
integer scale from {{ judge.scale[0] }} to {{ judge.scale[1] }}{% if judge.samples > 1 %},
{{ judge.samples }} samples averaged{% endif %}, temperature {{ judge.generation.temperature }}.
The judge read {{ judge_reads }}{% if over_context %} ({{ over_context }} traces refused){% endif %}.
{% if judge.structured == "auto" %}Its answers were decoded under a JSON schema (each
dimension a rationale and an integer score), and every answer was checked against it.
{% else %}Its answers were free text, read by a lenient parser.
{% endif %}{% if judge.thinking %}It reasoned before answering (reasoning {{ judge.thinking.why }},
up to {{ judge.thinking.budget }} tokens{% if judge.structured == "auto" %}; the schema applied only after the
reasoning{% endif %}). The
reasoning is kept in the `traces` column `judge_reasoning` and counted in the judge's tokens;
expected scores read only the answer's score tokens, never digits in the reasoning.
{% else %}It answered without reasoning first (reasoning: off{% if judge.reasoning != "off" %},
by the auto rule: not a model of a known reasoning family{% endif %}).
{% endif %}{% if score_kinds %}Scores: {% for kind, n in score_kinds %}{{ n }} {{ kind }}{{ ", " if not loop.last }}{% endfor %}
(expected: the probability-weighted mean of the scale values at the score token, so scores
and deltas are continuous; sampled: the integer the judge wrote).
{% endif %}
{% if judge.show_reference %}The judge was shown each prompt's reference answer, where one exists
(`judge.show_reference`): its scores are reference-guided, and the verifier agreement below
no longer measures the judge independently.
{% endif %}{% if panel %}### Judge panel

{{ panel }}
{% endif %}{% if validity %}### Judge validity

{{ validity }}
{% endif %}
### Rubric

{% for d in judge.dimensions -%}
- **{{ d.name }}**: {{ d.rubric | oneline }}
{% endfor %}
## Counts

| | count |
|---|---|
| prompts | {{ summary.prompts }} |
| traces | {{ summary.traces }} |
| pairs | {{ summary.pairs }} |
| pairs with judge deltas | {{ summary.judged_pairs }} |
{% for split, n in splits.items() -%}
| pairs in split `{{ split }}` | {{ n }} |
{% endfor -%}
{% for status, n in judge_status -%}
| judge status `{{ status }}` | {{ n }} |
{% endfor -%}
{% for status, n in lost -%}
| pairs {{ "kept without deltas" if summary.unjudged_pairs_kept else "not made" }}: judge status `{{ status }}` | {{ n }} |
{% endfor -%}
| ties dropped | {{ summary.ties_dropped }} |
| ties kept (delta 0) | {{ summary.ties_kept }} |
| prompts without a pair | {{ summary.prompts_without_pair }} |
{% if test_note %}
{{ test_note }}
{% endif %}{% if tokens %}
## Tokens

What the stored answers took, as each backend reported it (a reused answer counts once;
the judge's re-asks included).

| generator or judge | model | calls | input tokens | output tokens |
|---|---|---|---|---|
{% for name, model, u in tokens -%}
| `{{ name }}` | `{{ model }}` | {{ u.calls }} | {{ u.input }}{% if u.unknown_input %} (+{{ u.unknown_input }} unreported){% endif %} | {{ u.output }}{% if u.unknown_output %} (+{{ u.unknown_output }} unreported){% endif %} |
{% endfor %}{% endif %}
## Sample-level delta

Chosen minus rejected, over all {{ summary.pairs }} pairs.

| column | mean | min | q25 | median | q75 | max |
|---|---|---|---|---|---|---|
{% for column, s in delta_stats -%}
| `{{ column }}` | {{ s.mean | num }} | {{ s.min | num }} | {{ s.q25 | num }} | {{ s.median | num }} | {{ s.q75 | num }} | {{ s.max | num }} |
{% endfor %}
{% for p in dimension_plots -%}
![{{ p.title }}]({{ p.path }})
{% endfor %}{% if not dimension_plots %}No pair has a sample-level delta: the judge scored no pair on both sides (the judge
status counts above say why), so there is nothing to plot.
{% elif unplotted %}No histogram for {% for c in unplotted %}`{{ c }}`{{ ", " if not loop.last }}{% endfor %}: no pair has a value there.
{% endif %}
## Generator-level delta

| generator pair | pairs | generator_delta | accuracy delta | mean delta |
|---|---|---|---|---|
{% for name, info in generator_pairs -%}
| {{ name }} | {{ info.pairs }} | {{ info.generator_delta | num }} | {{ info.generator_accuracy_delta | num }} | {{ info.mean_delta.delta | num }} |
{% endfor %}
{% if pair_plots %}Histograms of the aggregate delta per generator pair (dashed: the generator delta):

{% for p in pair_plots -%}
![{{ p.title }}]({{ p.path }})
{% endfor %}{% else %}No generator pair has a pair with an aggregate delta to plot.
{% endif %}
## Columns of `pairs`

| column | meaning |
|---|---|
| `pair_id`, `prompt_id` | ids; `prompt_id` is the sha256 of the prompt |
| `prompt`, `chosen`, `rejected` | conversations: lists of `{role, content}` |
| `chosen_generator`, `rejected_generator`, `chosen_model`, `rejected_model` | who wrote each trace |
| `chosen_scores`, `rejected_scores` | judge score per dimension |
{% for d in dimensions -%}
| `delta_{{ d }}` | chosen minus rejected on {{ d }} |
{% endfor -%}
| `delta` | the {{ aggregate }} of the dimension deltas |
| `generator_delta`, `generator_accuracy_delta` | the generator-level gap (judge score, verifier accuracy) |
| `chosen_correct`, `rejected_correct` | final answer matches the reference (null without references) |
| `judge_model` | the judge |
| `chosen_judge_status`, `rejected_judge_status` | `ok`, or why the judge could not score that trace (its deltas are then null) |
| `chosen_trace_key`, `rejected_trace_key` | the traces' ids: their rows in the `traces` config |
"""
