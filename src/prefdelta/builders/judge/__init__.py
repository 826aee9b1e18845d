"""The LLM judge: how a recipe's judge is asked, and how its answers become scores.

Where things are:

- :mod:`.spec`: :class:`~.spec.JudgeSpec`, a recipe's ``judge`` block resolved once (its
  template text, system prompt, schema, fingerprint, dimensions, scale and reader). Every
  stage of a build takes the spec, never the config and the recipe's folder.
- :mod:`.task`: ``ReasoningJudge``, the distilabel Task that asks and re-asks, and
  ``judge_from_spec``, the step for a spec.
- :mod:`.prompt`: the messages the judge is sent (``inspect --judge-prompt`` shows them).
- :mod:`.reader`: ``AnswerReader``, the one place a raw answer becomes scores and a status.
- :mod:`.parsing`: the lenient reader of prose answers, and the judgment statuses;
  :mod:`.lenient_json`: the forgiving JSON reader it uses.
- :mod:`.structured`: schema-enforced answers per backend, their validation, and
  expected scores from token probabilities; :mod:`.constrained`: local models' grammar-
  constrained ``generate``.
- :mod:`.validity`: the judge validity report every build writes.
- ``templates/judge.jinja2``: the built-in user turn.

The judgment's JSON schema and the built-in rubrics stay in :mod:`prefdelta.recipe.judgment`
and :mod:`prefdelta.recipe.rubrics`, which the recipe checks against.

What it may import: the recipe layer, :mod:`prefdelta.stats`, :mod:`prefdelta.builders.keys`
(the judge fingerprint) and the LLM backends (:mod:`prefdelta.builders.llms`); never
the build, its pipelines or its summary (an import-linter contract in ``pyproject.toml``).
This package imports nothing itself: the LLM backends import its decoding modules, and the
Task imports the backends.
"""
