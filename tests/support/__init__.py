"""Shared test support: fixtures and helpers that test modules import, never tests themselves.

- ``build_fixtures``: finished build folders from synthetic traces, through the real pairing
- ``hub_server``: the loopback Hub (``HubServer``) that conftest runs for the whole session
- ``model_fixtures``: the tiny random Llama (``build_tiny_model``; also as a GGUF file) and a
  loopback chat server
- ``store_fixtures``: ``InspectableStore``, a ``ResultStore`` that also reads whole tables
- ``argilla_fixtures``: the session-wide real Argilla stack
- ``llamacpp_fixtures``: the session-wide llama-cpp-python server running SmolLM2
- ``train_fixtures``: TRL configs for a few CPU steps

``tests/`` is on ``sys.path`` (pytest prepends the folder of tests/conftest.py), so a test
module imports them as ``from support.build_fixtures import make_build``. Importing this
package imports nothing: ``hub_server`` must load before huggingface_hub and datasets do.
"""
