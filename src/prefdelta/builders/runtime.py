"""The build's housekeeping around distilabel: workers that die with the build, a private
scratch folder per pipeline run (swept when a killed build left one), the caller's
logging restored after a run, a local Ray runtime shut down if the run started it, and a
run that Ctrl-C stopped told apart from one that finished."""

from __future__ import annotations

import gc
import logging
import logging.handlers
import os
import select
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefdelta.errors import PrefdeltaError
from prefdelta.schema import STOP_REQUEST
from prefdelta.scratch import make_scratch, remove_abandoned

__all__ = [
    "SCRATCH_PREFIX",
    "BuildInterrupted",
    "frozen_heap",
    "pipeline_scratch",
    "run_pipeline",
    "stop_request_path",
    "workers_die_with_their_parent",
]

INTERRUPTED = "interrupted; rerun to resume"


class BuildInterrupted(PrefdeltaError, RuntimeError):
    """Ctrl-C stopped the build: every answer it got is in the store, no later stage ran,
    and a rerun resumes where it stopped."""

    def __init__(self) -> None:
        super().__init__(INTERRUPTED)


def run_pipeline(pipeline: Any, store_path: Path) -> None:
    """Run a distilabel pipeline to its end; raise :class:`BuildInterrupted` if Ctrl-C
    stopped it.

    distilabel answers Ctrl-C with its own SIGINT handler (``Pipeline._stop``): the steps
    finish the batches they hold (the store keeps those answers) and ``run`` returns as
    if the work were done, with nothing that says it stopped early; a third Ctrl-C makes
    it kill its steps and exit. The build must not go on to the next stage then, so SIGINT
    is watched while the pipeline runs (:func:`_sigint_watch`).

    A step process forked here learns of Ctrl-C from distilabel's handler, but a step on
    Ray runs in an actor that the signal never reaches (a node of its own, or a cluster
    started apart), and would ask every row of its batch, thousands of them, before
    distilabel's stop could end the run. So Ctrl-C also writes the stop request beside the
    store (``store_path``'s folder, which every step reads: :func:`stop_request_path`);
    the steps start no new row once it exists. It is removed when the run ends.

    The step processes are forked from this one, after its imports (distilabel, pandas,
    pyarrow, scipy: some 240,000 objects). Python's collector, in each step and here,
    walks every object it tracks at each full collection, and in a step that also makes
    the kernel copy every page it touches. So the run is :func:`frozen_heap`'s: collections
    walk only what was made since, in about a millisecond where one took a tenth of a second.
    """
    stop = stop_request_path(store_path)
    stop.unlink(missing_ok=True)  # a build killed before it could remove its own
    try:
        with frozen_heap(), _sigint_watch(on_interrupt=stop.touch) as interrupted:
            try:
                pipeline.run(use_cache=False)
            except SystemExit:  # distilabel's forced stop
                if not interrupted():
                    raise
                raise BuildInterrupted from None
    finally:
        stop.unlink(missing_ok=True)
    if interrupted():
        raise BuildInterrupted


_frozen_depth = 0  # the frozen_heap blocks running; gc's frozen set is the process's


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep every object alive now out of the collector's walks while the block runs
    (``gc.freeze``, the fork pattern the gc module describes), and hand them back when
    the outermost such block ends, so that the interpreter's exit frees them as usual.

    A build holds the objects of its imports (some 240,000) and of its plan for as long as
    it runs. Unfrozen, every full collection walks them all, 0.15-0.2 s each, several
    times a build: while it plans, between its pipelines, while it writes its tables
    (0.7 s of CPU at 8,000 prompts). A block entered inside another freezes what was made
    since, for the processes it forks.
    """
    global _frozen_depth
    gc.freeze()
    _frozen_depth += 1
    try:
        yield
    finally:
        _frozen_depth -= 1
        if _frozen_depth == 0:
            gc.unfreeze()


def stop_request_path(store_path: str | Path) -> Path:
    """The file whose presence tells a build's steps that Ctrl-C reached the build."""
    return Path(store_path).parent / STOP_REQUEST


@contextmanager
def _sigint_watch(on_interrupt: Callable[[], Any] | None = None) -> Iterator[Callable[[], bool]]:
    """Yield ``interrupted()``: whether SIGINT arrived while the block ran, whichever
    handler took it, and put the caller's SIGINT handler back afterwards; ``on_interrupt``
    is called (once, from a watching thread) as soon as the first SIGINT arrives.

    The interpreter writes the number of each signal it catches to the signal module's
    wakeup fd before it runs the Python handler, whoever installed that handler, so a
    pipe set as the wakeup fd sees distilabel's Ctrl-C without reaching into distilabel
    (which leaves its handler installed after ``run``: a later Ctrl-C would go to it).
    Signals are only handled on the main thread; elsewhere nothing is watched.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    saved = signal.getsignal(signal.SIGINT)
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)
    caught = bytearray()
    lock = threading.Lock()
    watching = threading.Event()
    watching.set()
    closed = False

    def drain() -> bool:
        with lock:
            while not closed:
                try:
                    chunk = os.read(read, 512)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                caught.extend(chunk)
            return signal.SIGINT in caught

    def watch() -> None:
        while watching.is_set():
            if select.select([read], [], [], 0.2)[0] and drain():
                if on_interrupt is not None:
                    on_interrupt()
                return

    watcher = threading.Thread(target=watch, name="prefdelta-sigint", daemon=True)
    previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    watcher.start()
    try:
        yield drain
    finally:
        if saved is not None:  # None: a handler not set from Python, which cannot be put back
            signal.signal(signal.SIGINT, saved)
        signal.set_wakeup_fd(previous)
        watching.clear()
        watcher.join()
        drain()
        closed = True
        os.close(read)
        os.close(write)


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
