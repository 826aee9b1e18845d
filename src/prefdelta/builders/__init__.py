"""Builders: a recipe becomes a distilabel pipeline that generates traces, judges them,
pairs them and computes their deltas.

Submodules are imported where they are used, so importing ``prefdelta.builders`` stays
cheap and never pulls in distilabel, torch or a backend SDK.

May import: ``recipe``, ``schema`` and the shared bottom modules (``errors``, ``files``,
``locations``, ``local_models``, ``scratch``). Never ``loading``, ``push``, ``review``,
``train`` or ``cli``, which all build on this package (the import contract in
pyproject.toml checks it).
"""
