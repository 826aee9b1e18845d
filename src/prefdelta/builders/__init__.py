"""Builders: a recipe becomes a distilabel pipeline that generates traces, judges them,
pairs them and computes their deltas.

Submodules are imported where they are used, so importing ``prefdelta.builders`` stays
cheap and never pulls in distilabel, torch or a backend SDK.
"""
