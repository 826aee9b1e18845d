"""The build's housekeeping around distilabel: workers that die with the build, a private
scratch folder per pipeline run (swept when a killed build left one), the caller's
logging restored after a run, and a local Ray runtime shut down if the run started it."""

from __future__ import annotations

import logging
import logging.handlers
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefdelta.scratch import make_scratch, remove_abandoned

__all__ = ["SCRATCH_PREFIX", "pipeline_scratch", "workers_die_with_their_parent"]

_PR_SET_PDEATHSIG = 1
_fork_parent: int | None = None


def workers_die_with_their_parent() -> None:
    """Every process forked from here on is killed when the process that forked it dies.

    distilabel runs each step in a forked, non-daemon worker (and a manager process); a
    build killed with ``kill -9`` cannot stop them, and they would go on holding memory (a
    GPU's, on a GPU) and writing to the store. Linux's parent-death signal does it in the
    kernel, so it holds whatever kills the build: each forked child asks for SIGKILL when
    its parent goes (``prctl(PR_SET_PDEATHSIG)``; the fork hooks are inherited, so a step's
    own workers follow the step), and exits at once if the parent is already gone. A
    watchdog thread in each worker would need polling and could be starved; the kernel
    signal cannot. Elsewhere than Linux this does nothing. Registered once per process.
    """
    global _fork_parent
    if _fork_parent is not None or not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def before() -> None:
        global _fork_parent
        _fork_parent = os.getpid()

    def in_child() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != _fork_parent:  # the parent died before the signal was armed
            os._exit(1)

    _fork_parent = os.getpid()
    os.register_at_fork(before=before, after_in_child=in_child)


@contextmanager
def pipeline_scratch(ray: bool = False) -> Iterator[Path]:
    """A private, temporary cache folder for one distilabel run.

    The store is the build's memory, not distilabel's cache: a fresh folder each run means a
    stale cache is never read back (which hangs or fails after a kill), and the pipeline
    dump, which holds the LLMs' tokens and keys in clear, never lands in the build folder.
    With ``ray``, a local Ray runtime that the run started is shut down after it.
    """
    remove_abandoned(SCRATCH_PREFIX)  # folders of builds killed before they could clean up
    with _scratch_folder() as folder, _own_logging():
        ray_module = None
        if ray:
            try:
                import ray as ray_module
            except ImportError:  # the pipeline says what to install
                ray_module = None
        if ray_module is None:
            yield Path(folder)
            return
        ours = not ray_module.is_initialized()
        try:
            yield Path(folder)
        finally:
            if ours and ray_module.is_initialized():
                ray_module.shutdown()


SCRATCH_PREFIX = "prefdelta-distilabel-"


@contextmanager
def _scratch_folder() -> Iterator[str]:
    folder = make_scratch(SCRATCH_PREFIX)
    try:
        yield str(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _own_logging() -> Iterator[None]:
    """Give the caller its logging back after a pipeline run.

    distilabel routes logging through a queue handler that it closes when the run ends;
    left in place, every later log call in the process prints a "Logging error".
    """
    loggers = [logging.getLogger(), *map(logging.getLogger, logging.root.manager.loggerDict)]
    saved = {id(lg): (lg, list(lg.handlers), lg.level, lg.propagate) for lg in loggers}
    try:
        yield
    finally:
        for lg, handlers, level, propagate in saved.values():
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.propagate = propagate
        for name in logging.root.manager.loggerDict:  # loggers the run itself created
            lg = logging.getLogger(name)
            if id(lg) not in saved:
                lg.handlers[:] = [
                    h for h in lg.handlers if not isinstance(h, logging.handlers.QueueHandler)
                ]
