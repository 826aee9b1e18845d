"""Shared test fixtures. Each component owns one section; keep sections independent."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.hub_server import HubServer  # tests/ is on sys.path; it never imports huggingface_hub

# ============================================================================ Hub (loopback)
# huggingface_hub and datasets read HF_ENDPOINT and the cache paths once, at import time,
# so the session-wide test Hub's address is fixed and exported here, before any test module
# imports them. HubServer binds its port when it is made, so the URL is known (and the port
# held) before it serves; it starts serving in pytest_sessionstart, before collection
# imports any test module, and stops in pytest_sessionfinish (its folders go at exit).
# Nothing in the suite may reach huggingface.co.

if "huggingface_hub" in sys.modules or "datasets" in sys.modules:
    raise RuntimeError(
        "huggingface_hub/datasets were imported before tests/conftest.py could point them at "
        "the loopback Hub; move that import out of the plugin or module that does it."
    )

_HUB_TMP = Path(tempfile.mkdtemp(prefix="prefdelta-hub-"))
HUB = HubServer(_HUB_TMP / "server")  # bound, not yet serving

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_ENABLE_HF_TRANSFER"):
    os.environ.pop(_var, None)
os.environ.update(
    HF_ENDPOINT=HUB.url,
    HF_TOKEN="hf_loopback_test_token",
    HF_HOME=str(_HUB_TMP / "hf_home"),
    HF_DATASETS_CACHE=str(_HUB_TMP / "hf_datasets"),
    HF_HUB_DISABLE_XET="1",
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_UPDATE_DOWNLOAD_COUNTS="0",  # else datasets pings s3.amazonaws.com on every load
)


def pytest_sessionstart(session: pytest.Session) -> None:
    HUB.start()


@pytest.hookimpl(trylast=True)  # after pytest's own hook has torn down session fixtures
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    HUB.stop()


@atexit.register  # also stops the Hub if the session never finished; stop() is idempotent
def _stop_hub() -> None:
    HUB.stop()
    shutil.rmtree(_HUB_TMP, ignore_errors=True)


@pytest.fixture
def hub() -> Iterator[HubServer]:
    """The loopback Hub, emptied before each test; faults are cleared after it."""
    HUB.reset()
    if "huggingface_hub" in sys.modules:  # cached listings/existence would outlive the reset
        from huggingface_hub import HfFileSystem

        HfFileSystem.clear_instance_cache()
    if "datasets" in sys.modules:  # no env switch: stops lookups of datasets-server.<HF_ENDPOINT>
        sys.modules["datasets"].config.USE_PARQUET_EXPORT = False
    yield HUB
    HUB.clear_faults()


# --------------------------------------------------------------------------- training caches
# Reference log-probs live in a cache of their own, never in a dataset folder; the suite's
# go to a session folder, so nothing lands in ~/.cache and no run reads an older run's.
_REF_CACHE = Path(tempfile.mkdtemp(prefix="prefdelta-ref-logps-"))
os.environ["PREFDELTA_REF_CACHE"] = str(_REF_CACHE)
atexit.register(shutil.rmtree, _REF_CACHE, ignore_errors=True)


# --------------------------------------------------------------------------- logging
import logging  # noqa: E402
import logging.handlers  # noqa: E402


@pytest.fixture(autouse=True)
def _no_leftover_queue_logging() -> Iterator[None]:
    """Tests that run a distilabel Pipeline in-process leave its queue log handler behind,
    closed; later log calls in other tests would print "Logging error" into their output."""
    yield
    for logger in [logging.getLogger(), *map(logging.getLogger, logging.root.manager.loggerDict)]:
        logger.handlers[:] = [
            h for h in logger.handlers if not isinstance(h, logging.handlers.QueueHandler)
        ]


# --------------------------------------------------------------------------- datasets cache


@pytest.fixture(autouse=True)
def _own_datasets_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A datasets cache per test: datasets 5.2 keys a local folder's cache by the folder's
    *name*, so a folder called ``published`` in one test would read another's rows."""
    import datasets

    saved = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = tmp_path_factory.mktemp("hf_datasets")
    try:
        yield
    finally:
        datasets.config.HF_DATASETS_CACHE = saved
