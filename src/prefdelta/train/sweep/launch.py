"""The sweep's runs as processes of their own, side by side on the devices (``launch:``).

Each run is the command a user would type to train it alone (``python -m
prefdelta.train.dpo runs/<name>/train.yaml``, or the same under ``accelerate launch
--config_file ...``), so a sweep on N GPUs is N such commands at a time, each with its
``CUDA_VISIBLE_DEVICES``. A run reports back through the record every training run
writes (:data:`~prefdelta.train.common.RUN_RECORD`); its output goes to
``runs/<name>/train.log`` and what ran where and when to ``runs/<name>/launch.json``.

A run that crashes is said at once (its log and last lines) and retried alone, once nothing
else is running (a crash from memory pressure beside other runs then does not recur),
up to ``retries`` times. Runs that finished keep their results whatever happens to the
others, so a rerun of the sweep trains only what is missing.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from prefdelta.train.common import RUN_RECORD
from prefdelta.train.sweep.config import LaunchConfig, SweepError

LOG = "train.log"
LAUNCH_RECORD = "launch.json"
TAIL_LINES = 5


@dataclass
class Job:
    """One training run to start: its tag for the log, its folder and config, its script."""

    tag: str
    run_dir: Path
    config_file: Path
    module: str  # prefdelta.train.dpo | prefdelta.train.kto
    attempts: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Running:
    job: Job
    slot: str | None
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    started: float


def command(job: Job, launch: LaunchConfig, base_dir: Path) -> list[str]:
    """The command that trains ``job``: the script, or the script under accelerate."""
    script = ["-m", job.module, str(job.config_file)]
    if launch.accelerate_config is None:
        return [sys.executable, *script]
    accelerate = [sys.executable, "-m", "accelerate.commands.launch"]
    accelerate += ["--config_file", str((base_dir / launch.accelerate_config).resolve())]
    if launch.num_processes is not None:
        accelerate += ["--num_processes", str(launch.num_processes)]
    # runs side by side each need their own rendezvous port
    accelerate += ["--main_process_port", str(_free_port())]
    return [*accelerate, *script]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, n: int = TAIL_LINES) -> list[str]:
    """The last ``n`` non-blank lines of a log."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if line.strip()][-n:]


def train_jobs(
    jobs: list[Job],
    launch: LaunchConfig,
    base_dir: Path,
    log: Callable[[str], None],
    on_done: Callable[[Job, dict[str, Any]], None],
) -> None:
    """Train every job, one per device slot at a time; ``on_done(job, record)`` as each
    finishes. Raises :class:`SweepError` naming each run that still failed after its
    retries (the others are done and kept)."""
    slots: list[str | None] = list(launch.devices) if launch.devices else [None]
    free = list(slots)
    queue = list(jobs)
    retry: list[Job] = []
    running: list[_Running] = []
    failed: list[str] = []
    while queue or retry or running:
        # a retry starts alone: only once every other run has finished
        while free and queue and not retry:
            running.append(_start(queue.pop(0), free.pop(0), launch, base_dir, log))
        if retry and not running:
            running.append(_start(retry.pop(0), free.pop(0), launch, base_dir, log))
        time.sleep(0.2)
        for r in [r for r in running if r.process.poll() is not None]:
            running.remove(r)
            free.append(r.slot)
            free.sort(key=slots.index)
            outcome = _finish(r)
            job = r.job
            if outcome is not None:
                on_done(job, outcome)
                continue
            log_path = job.run_dir / LOG
            why = job.attempts[-1]["outcome"]
            last = tail(log_path)
            n = len(job.attempts)
            if n <= launch.retries:
                log(f"{job.tag}: crashed ({why}); log {log_path}; retrying alone")
            else:
                log(f"{job.tag}: crashed ({why}), attempt {n} of {n}; log {log_path}")
                failed.append(
                    f"{job.tag}: training failed ({why}, {n} attempt(s)); log: {log_path}"
                )
                failed += [f"  {line}" for line in last]
                continue
            for line in last:
                log(f"  {line}")
            retry.append(job)
    if failed:
        raise SweepError(
            [*failed, "finished runs are kept: rerun the sweep to train only the failed ones"]
        )


def _start(
    job: Job, slot: str | None, launch: LaunchConfig, base_dir: Path, log: Callable[[str], None]
) -> _Running:
    env = dict(os.environ)
    if slot is not None:
        env["CUDA_VISIBLE_DEVICES"] = slot
    cmd = command(job, launch, base_dir)
    job.run_dir.mkdir(parents=True, exist_ok=True)
    (job.run_dir / RUN_RECORD).unlink(missing_ok=True)  # a stale record is no result
    out = (job.run_dir / LOG).open("ab")
    out.write(f"\n=== attempt {len(job.attempts) + 1}: {' '.join(cmd)}\n".encode())
    out.flush()
    where = "" if slot is None else f" on CUDA_VISIBLE_DEVICES={slot}"
    log(f"{job.tag}: training{where} (log {job.run_dir / LOG})")
    job.attempts.append({"command": cmd, "devices": slot, "started": time.time()})
    process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    return _Running(job, slot, process, out, time.time())


def _finish(r: _Running) -> dict[str, Any] | None:
    """The run's record when it succeeded, else None; its attempt is recorded either way."""
    r.log.close()
    attempt = r.job.attempts[-1]
    code = r.process.returncode
    attempt.update(ended=time.time(), exit_code=code, outcome=f"exit {code}")
    record: dict[str, Any] | None = None
    if code == 0:
        try:
            record = json.loads((r.job.run_dir / RUN_RECORD).read_text(encoding="utf-8"))
            attempt["outcome"] = "done"
        except (OSError, ValueError):
            attempt["outcome"] = f"exit 0 without {RUN_RECORD}"
    path = r.job.run_dir / LAUNCH_RECORD
    path.write_text(json.dumps({"attempts": r.job.attempts}, indent=2), encoding="utf-8")
    return record
