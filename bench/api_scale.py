"""How close an API build comes to the throughput its request slots allow, and what it costs.

A loopback OpenAI-compatible server (its own process) answers every request after a drawn
latency: ``constant`` (the median) or ``lognormal`` (median, sigma), times
``--latency-scale``. A build of two API generators and an API judge, ``concurrency`` and
``batch_size`` 64 each, runs against it as ``prefdelta build`` in a fresh process. Per model
it prints the requests, the time from its first request to its last answer, the ideal (its
latencies summed / concurrency, that is requests x mean latency / concurrency) and their
ratio, and the same against a perfect stream of the same latencies (each request sent the
moment a slot frees; the stage's end, where the slots empty behind the slowest requests,
then counts against no client); for the build: wall time, the peak RSS of its process tree
(sampled every 0.2 s) and of its largest process, and its CPU time per trace (the build's
processes only: the server runs apart), also beyond the fixed cost (the CPU of a 10-prompt
build, run first), split by process: the build's own and each child's (steps and
distilabel's helpers; their last samples), and the children's wake-ups (voluntary context
switches) per request: answers that arrive one by one (lognormal latency) wake a step once
each, where a burst of answers (constant latency) shares one, and the CPU per request
follows. Compare CPU only between runs on the same machine: the same code's ms per trace
differs by 1.5x between machines of the same kind, and by 10-20% between runs on one. Goals:
ratio >= 0.85 at constant latency, >= 0.80 at lognormal (median 1 s, sigma 1); RSS at 8,000
prompts <= 1.3x RSS at 2,000; <= 3 ms CPU per trace.

    python bench/api_scale.py                                  # 2,000 and 8,000 prompts, both latencies
    python bench/api_scale.py --prompts 500 --latency-scale 0.2  # a quick run
    python bench/api_scale.py --large                          # adds 16,000 prompts
    python bench/api_scale.py --trace-chars 30000              # 30 kB traces (memory)
    python bench/api_scale.py --terminal                       # progress drawn as at a terminal
    python bench/api_scale.py --prompts 2000 --latencies lognormal --baseline main --repeat 2

``PYTHONPATH`` chooses the sources the build runs (``src`` of a checkout or an export).
``--baseline`` runs a second version beside them: a git revision of this checkout (its
``src`` exported) or a source folder. Every configuration then runs for both, alternated
(baseline, this, this, baseline, ...), ``--repeat`` times each, and a last table gives each
side's median and their ratio: runs minutes apart on one machine differ by up to 20% in
CPU, so a change is only read against its baseline run the same way, in the same hour.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import io
import json
import math
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

DIMENSIONS = ("step_coherence", "factuality")
MODELS = ("gen-a", "gen-b", "the-judge")
CONCURRENCY = 64

RECIPE = """name: api-scale
prompts: {{path: prompts.jsonl}}
generators:
  a: {{model: gen-a, backend: openai, base_url: {url}, batch_size: 64, concurrency: 64, request_timeout: 600}}
  b: {{model: gen-b, backend: openai, base_url: {url}, batch_size: 64, concurrency: 64, request_timeout: 600}}
pairing: {{chosen: a, rejected: [b]}}
judge:
  model: the-judge
  backend: openai
  base_url: {url}
  batch_size: 64
  concurrency: 64
  request_timeout: 600
  dimensions: [step_coherence, factuality]
  scoring: sampled
"""


# ----------------------------------------------------------------------------- the server


def serve(port: int, latency: str, median: float, sigma: float, trace_chars: int) -> None:
    """The latency server: answers each chat request after its drawn latency; GET /stats
    gives ``[model, arrived, answered, latency]`` per request (monotonic seconds)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    draw = random.Random(0)
    log: list[tuple[str, float, float, float]] = []
    verdict = json.dumps({d: {"rationale": "fine", "score": 3} for d in DIMENSIONS})
    pad = "x" * max(0, trace_chars - 40)

    async def chat(request: Request) -> JSONResponse:
        arrived = time.monotonic()
        body = await request.json()
        model = body.get("model", "")
        wait = median if latency == "constant" else median * math.exp(draw.gauss(0, sigma))
        await asyncio.sleep(wait)
        if model == "the-judge":
            text = verdict
        else:  # a trace of its own per request: judgments never collapse into one
            text = f"{len(log)} {body['messages'][-1]['content'][:24]} {pad}"
        log.append((model, arrived, time.monotonic(), wait))
        return JSONResponse(
            {
                "id": f"c{len(log)}",
                "object": "chat.completion",
                "created": 0,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
            }
        )

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(log)

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/stats", stats, methods=["GET"]),
        ]
    )
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, backlog=4096
    )
    uvicorn.Server(config).run()


def start_server(latency: str, median: float, sigma: float, trace_chars: int) -> tuple[Any, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [sys.executable, __file__, "--serve", str(port), "--latency", latency]
    args += ["--median", str(median), "--sigma", str(sigma), "--trace-chars", str(trace_chars)]
    proc = subprocess.Popen(args)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the latency server did not start")


def server_log(url: str) -> list[list[Any]]:
    import urllib.request

    with urllib.request.urlopen(f"{url}/stats", timeout=60) as r:
        return json.loads(r.read())


# ------------------------------------------------------------------------------ one build


def run_build(
    folder: Path, url: str, prompts: int, terminal: bool = False, sources: str | None = None
) -> dict[str, Any]:
    """``prefdelta build`` in a fresh process: wall s, CPU s, peak RSS (tree, largest).
    ``terminal``: its output is drawn as at a terminal (bars redrawn as they move), else
    written as to a file, with its plain progress lines and heartbeats turned off.
    ``sources``: a folder whose ``prefdelta`` the build runs instead of the installed one."""
    import psutil

    folder.mkdir(parents=True)
    rows = [{"problem": f"Problem {i}: what is {i} plus {i}?"} for i in range(prompts)]
    (folder / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "recipe.yaml").write_text(RECIPE.format(url=f"{url}/v1"))
    cmd = [sys.executable, "-m", "prefdelta", "build", str(folder / "recipe.yaml")]
    cmd += ["-o", str(folder / "out"), "--no-publish"]
    env = {**os.environ, "PREFDELTA_PROGRESS_EVERY": "3600", "PREFDELTA_HEARTBEAT_S": "3600"}
    if terminal:  # rich's switch: its console is a terminal's, the log file notwithstanding
        env = {**os.environ, "TTY_COMPATIBLE": "1"}
    if sources is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [sources, env.get("PYTHONPATH")]))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    log = (folder / "build.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    root = psutil.Process(proc.pid)
    peak_tree = peak_one = 0
    cpu_seen: dict[int, float] = {}  # each process's CPU at its last sample
    waits: dict[int, int] = {}  # each process's voluntary context switches (wake-ups)
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            rss = []
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    rss.append(p.memory_info().rss)
                    times = p.cpu_times()
                    cpu_seen[p.pid] = times.user + times.system
                    waits[p.pid] = p.num_ctx_switches().voluntary
            peak_tree = max(peak_tree, sum(rss))
            peak_one = max(peak_one, max(rss, default=0))
        except psutil.Error:
            pass
        time.sleep(0.2)
    wall = time.monotonic() - started
    log.close()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        tail = (folder / "build.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the build failed ({proc.returncode}):\n{tail}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    parent = cpu_seen.pop(proc.pid, 0.0)
    waits.pop(proc.pid, None)
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_parent_s": parent,
        "cpu_children_s": sorted(cpu_seen.values(), reverse=True),
        "wakeups_children": sum(waits.values()),
        "rss_tree_mb": peak_tree / 2**20,
        "rss_max_mb": peak_one / 2**20,
        "started": started,
    }


def stream_span(latencies: list[float], slots: int = CONCURRENCY) -> float:
    """How long ``latencies``, in this order, take through ``slots`` request slots when
    each request starts the moment a slot frees: the best any client does with this draw.
    The ideal (their sum / slots) leaves out the stage's end, where the last requests run
    as the slots empty; with long-tailed latencies that end is seconds long."""
    free = [0.0] * min(slots, len(latencies))
    end = 0.0
    for latency in latencies:
        done = heapq.heappop(free) + latency
        end = max(end, done)
        heapq.heappush(free, done)
    return end


def per_model(log: list[list[Any]]) -> dict[str, dict[str, float]]:
    out = {}
    for model in MODELS:
        mine = sorted((r for r in log if r[0] == model), key=lambda r: r[1])  # by arrival
        if not mine:
            continue
        span = max(r[2] for r in mine) - min(r[1] for r in mine)
        ideal = sum(r[3] for r in mine) / CONCURRENCY
        stream = stream_span([r[3] for r in mine])
        out[model] = {"requests": len(mine), "span_s": span, "ideal_s": ideal, "stream_s": stream}
    return out


def one(
    prompts: int, latency: str, args: argparse.Namespace, scratch: Path, sources: str | None = None
) -> dict[str, Any]:
    median = args.median * args.latency_scale
    server, url = start_server(latency, median, args.sigma, args.trace_chars)
    try:
        folder = Path(tempfile.mkdtemp(prefix=f"{latency}-{prompts}-", dir=scratch))
        build = run_build(folder / "build", url, prompts, args.terminal, sources)
        models = per_model(server_log(url))
    finally:
        server.terminate()
        server.wait()
    traces = 2 * prompts
    result = {"prompts": prompts, "traces": traces, "latency": latency, **build, "models": models}
    result["cpu_ms_per_trace"] = 1000 * build["cpu_s"] / traces
    return result


FIXED_PROMPTS = 10


def fixed_cost_s(args: argparse.Namespace, scratch: Path, sources: str | None = None) -> float:
    """The CPU of a build with almost no work (``FIXED_PROMPTS`` prompts answered at once):
    what every build spends whatever its size (imports, the pipelines' start, the end's
    tables and checks, the interpreter's exit)."""
    server, url = start_server("constant", 0.0, args.sigma, args.trace_chars)
    try:
        folder = Path(tempfile.mkdtemp(prefix="fixed-", dir=scratch))
        return run_build(folder / "build", url, FIXED_PROMPTS, sources=sources)["cpu_s"]
    finally:
        server.terminate()
        server.wait()


def beyond_fixed_ms(r: dict[str, Any], fixed_s: float) -> float:
    """A run's CPU per trace less the fixed cost (``fixed_s``, spread over its traces)."""
    return 1000 * (r["cpu_s"] - fixed_s) / r["traces"]


def of_ideal(m: dict[str, float]) -> float:
    """A model's achieved/ideal: its ideal span over the span it took (nan: no span)."""
    return m["ideal_s"] / m["span_s"] if m["span_s"] else float("nan")


def show(r: dict[str, Any], fixed_s: float) -> None:
    side = f"[{r['side']}] " if r.get("side") else ""
    line = (
        f"{side}{r['latency']:>9} {r['prompts']:>6} prompts: wall {r['wall_s']:.1f} s, peak RSS "
        f"{r['rss_tree_mb']:.0f} MB (tree) / {r['rss_max_mb']:.0f} MB (largest process), "
        f"CPU {r['cpu_ms_per_trace']:.2f} ms/trace"
    )
    print(line)
    print(f"    CPU beyond the fixed {fixed_s:.2f} s: {beyond_fixed_ms(r, fixed_s):.2f} ms/trace")
    others = " / ".join(f"{c:.2f}" for c in r["cpu_children_s"] if c >= 0.01)
    print(
        f"    CPU by process (sampled, s): build {r['cpu_parent_s']:.2f}; its children, "
        f"largest first (the steps, then distilabel's helpers): {others}"
    )
    requests = sum(m["requests"] for m in r["models"].values())
    if requests:
        print(
            f"    wake-ups of the children (voluntary context switches, sampled): "
            f"{r['wakeups_children'] / requests:.2f} per request"
        )
    for model, m in r["models"].items():
        ratio = of_ideal(m)
        stream = m["stream_s"] / m["span_s"] if m["span_s"] else float("nan")
        print(
            f"    {model:>9}: {m['requests']} requests in {m['span_s']:.1f} s, ideal "
            f"{m['ideal_s']:.1f} s, achieved/ideal {ratio:.2f}; a perfect stream of the "
            f"same latencies {m['stream_s']:.1f} s, achieved/perfect {stream:.2f}"
        )
    sys.stdout.flush()


def baseline_sources(spec: str, scratch: Path) -> str:
    """The folder holding the baseline's ``prefdelta``: ``spec`` itself (or its ``src``)
    when it is a folder, else the git revision ``spec`` of this checkout, its ``src``
    exported into ``scratch``."""
    folder = Path(spec)
    if folder.is_dir():
        return str(folder / "src" if (folder / "src" / "prefdelta").is_dir() else folder)
    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", spec, "src"], capture_output=True, check=False
    )
    if archive.returncode != 0:
        why = archive.stderr.decode(errors="replace").strip()
        raise SystemExit(f"--baseline {spec}: no such folder, and git cannot export it: {why}")
    out = scratch / "baseline"
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(out, filter="data")
    return str(out / "src")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def side_by_side(results: list[dict[str, Any]], fixed: dict[str, float]) -> None:
    """Per configuration, each side's medians (CPU per trace, beyond the fixed cost, of
    ideal per model) and this version's over the baseline's."""
    print("\nside by side, medians of each side's runs (this / baseline: under 1 is less CPU):")
    configs = dict.fromkeys((r["latency"], r["prompts"]) for r in results)
    for latency, n in configs:
        mine = {
            side: [
                r for r in results if (r["latency"], r["prompts"], r["side"]) == (latency, n, side)
            ]
            for side in ("baseline", "this")
        }
        cpu = {side: _median([r["cpu_ms_per_trace"] for r in rs]) for side, rs in mine.items()}
        beyond = {
            side: _median([beyond_fixed_ms(r, fixed[side]) for r in rs])
            for side, rs in mine.items()
        }
        over = (
            f"{beyond['this'] / beyond['baseline']:.2f}x"
            if beyond["this"] > 0 and beyond["baseline"] > 0
            else "no ratio: the fixed cost is most of this run"
        )
        print(
            f"  {latency:>9} {n:>6} prompts: CPU per trace {cpu['baseline']:.2f} -> "
            f"{cpu['this']:.2f} ms ({cpu['this'] / cpu['baseline']:.2f}x), beyond the fixed "
            f"cost {beyond['baseline']:.2f} -> {beyond['this']:.2f} ms ({over}); "
            f"{len(mine['this'])} run(s) each"
        )
        for model in MODELS:
            ratios = {
                side: _median(
                    [
                        of_ideal(r["models"][model])
                        for r in rs
                        if model in r["models"] and r["models"][model]["span_s"]
                    ]
                )
                for side, rs in mine.items()
            }
            print(f"      {model:>9}: of ideal {ratios['baseline']:.2f} -> {ratios['this']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--prompts", type=int, nargs="+", default=[2000, 8000])
    ap.add_argument("--large", action="store_true", help="also 16,000 prompts")
    ap.add_argument("--latencies", nargs="+", default=["constant", "lognormal"])
    ap.add_argument("--median", type=float, default=1.0, help="median latency, s")
    ap.add_argument("--sigma", type=float, default=1.0, help="lognormal sigma")
    ap.add_argument("--latency-scale", type=float, default=1.0, help="times every latency")
    ap.add_argument("--trace-chars", type=int, default=2000)
    ap.add_argument(
        "--terminal", action="store_true", help="the build's progress as at a terminal: bars"
    )
    ap.add_argument(
        "--baseline", help="a git revision of this checkout, or a source folder, run alongside"
    )
    ap.add_argument("--repeat", type=int, default=1, help="runs of each configuration per side")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--latency", default="constant", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.latency, args.median, args.sigma, args.trace_chars)
        return
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    sizes = args.prompts + ([16000] if args.large else [])
    results = []
    with tempfile.TemporaryDirectory(prefix="api-scale-") as tmp:
        sides: list[tuple[str, str | None]] = [("", None)]
        if args.baseline:
            sides = [("baseline", baseline_sources(args.baseline, Path(tmp))), ("this", None)]
        fixed = {}
        for side, sources in sides:
            fixed[side] = fixed_cost_s(args, Path(tmp), sources)
            label = f" [{side}]" if side else ""
            print(
                f"fixed cost{label}: a {FIXED_PROMPTS}-prompt build, answered at once, "
                f"{fixed[side]:.2f} s of CPU"
            )
        for latency in args.latencies:
            for n in sizes:
                for k in range(args.repeat):  # each side first in turn: drift favours neither
                    for side, sources in sides if k % 2 == 0 else sides[::-1]:
                        results.append({**one(n, latency, args, Path(tmp), sources), "side": side})
                        show(results[-1], fixed[side])
    for side, _ in sides:
        runs = {(r["latency"], r["prompts"]): r for r in results if r["side"] == side}
        for latency in args.latencies:
            small, big = runs.get((latency, min(sizes))), runs.get((latency, max(sizes)))
            if small and big and small is not big:
                print(
                    f"{f'[{side}] ' if side else ''}{latency}: RSS({max(sizes)}) / "
                    f"RSS({min(sizes)}) = {big['rss_tree_mb'] / small['rss_tree_mb']:.2f} "
                    f"(tree), {big['rss_max_mb'] / small['rss_max_mb']:.2f} (largest process)"
                )
    if args.baseline:
        side_by_side(results, fixed)
    if args.json:
        fixed_out: Any = fixed if args.baseline else fixed[""]
        args.json.write_text(json.dumps({"fixed_cpu_s": fixed_out, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
