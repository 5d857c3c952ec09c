"""Gateway overhead: the mock upstream directly, the Python floor (floor.py: a bare
forwarding proxy) in front of it, the FastAPI floor (fastapi_floor.py: the same on
FastAPI with a pydantic body), modelport in front of it, and LiteLLM's proxy in front of
it, measured in one run, interleaved, with wrk on loopback.

    .venv/bin/python benchmarks/gateway/run.py --litellm /path/to/litellm-venv/bin/litellm
    .venv/bin/python benchmarks/gateway/run.py --limits   # also modelport with limits, Redis on loopback
    .venv/bin/python benchmarks/gateway/run.py --cache    # also modelport answering from its response cache
    .venv/bin/python benchmarks/gateway/run.py --keyed    # an allow-listed key with a cache that always misses

See benchmarks/README.md for what it reports and the numbers measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run as a script: the shared helpers sit one level up

from servers import API_KEY, MODELPORT, free_port, modelport_env, start, stop  # noqa: E402

LITELLM_KEY = "sk-bench-0123456789abcdef0123456789abcdef"
# --limits: a key that every limit applies to, none of them ever reached (what is measured
# is the cost of counting: one Redis round trip at admission, one at settlement).
LIMITED_KEY_BODY = {
    "role": "member",
    "name": "bench-limits",
    "rpm_limit": 2_000_000_000,
    "tpm_limit": 2_000_000_000,
    "max_parallel_requests": 1_000_000,
    "max_budget": 1e12,
    "budget_duration": "30d",
}

# --cache: a key whose answers the response cache keeps; with a deterministic body every
# request after the first is a hit (what is measured is a hit's whole cost: auth, lookup,
# admission, the usage record, shaping the kept answer).
CACHED_KEY_BODY = {"role": "member", "name": "bench-cache", "cache_ttl_seconds": 86400}

# --keyed: a key limited to the mock model whose answers the response cache keeps, sent
# deterministic requests that all differ (each one a lookup that misses, then a store):
# what the allow-list, the audit log and the cache lookup add to a request that is
# generated (issue 24: at most 5 % CPU), against the same server and requests with the
# admin key, which has neither.
KEYED_KEY_BODY = {"role": "member", "name": "bench-keyed", "models": ["mock"], "cache_ttl_seconds": 86400}

OPENAI_BODY = {"model": "mock", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
MODELPORT_BODY = {"chat_history": [], "prompt": "Say hello.", "max_tokens": 16}

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[%(body)s]]
%(headers)s
done = function(summary, latency, requests)
  local out = string.format(
    '{"requests": %%d, "seconds": %%f, "errors": %%d, "p50_us": %%d, "p99_us": %%d, "mean_us": %%f}',
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status
      + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean)
  io.stderr:write("WRKJSON " .. out .. "\\n")
end
"""


# Each request's prompt ends with its own mark: this thread's (a table's address and the
# time, unique across threads and runs) and a count. No two requests are the same.
WRK_VARYING_SCRIPT = """
wrk.method = "POST"
%(headers)s
local template = [[%(body)s]]
local counter = 0
local mark = ""
init = function(args)
  mark = tostring({}):match("0x(%%x+)") .. "-" .. os.time()
end
request = function()
  counter = counter + 1
  local body = template:gsub("@N@", mark .. "-" .. counter)
  return wrk.format(nil, nil, nil, body)
end
""" + WRK_SCRIPT[WRK_SCRIPT.index("done = function") :]


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (uvicorn workers are children of the supervisor)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of the process tree."""
    user = system = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user, system = user + int(fields[11]), system + int(fields[12])  # utime, stime
    ticks = os.sysconf("SC_CLK_TCK")
    return user / ticks, system / ticks


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def rss_mb(pid: int) -> float:
    """Resident memory of the process tree, MB (the supervisor's included)."""
    total = 0
    for member in process_tree(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


@dataclass
class Target:
    name: str
    url: str
    body: dict[str, object]
    headers: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    startup_seconds: float | None = None
    rss_after_start: float | None = None
    scripts: dict[bool, Path] = field(default_factory=dict)
    varying: bool = False  # each request's prompt made unique (WRK_VARYING_SCRIPT)

    def script(self, workdir: Path, stream: bool) -> Path:
        if stream not in self.scripts:
            body = json.dumps({**self.body, "stream": stream})
            headers = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in self.headers.items())
            path = workdir / f"{self.name}-{'stream' if stream else 'json'}.lua"
            template = WRK_VARYING_SCRIPT if self.varying else WRK_SCRIPT
            path.write_text(template % {"body": body, "headers": headers})
            self.scripts[stream] = path
        return self.scripts[stream]


def wait_until_served(target: Target, started: float, timeout: float = 60.0) -> float:
    """Seconds from `started` until the target answers a real request with 200."""
    body = {**target.body, "stream": False}
    deadline = started + timeout
    with httpx.Client(timeout=5) as client:
        while time.perf_counter() < deadline:
            if target.process is not None and target.process.poll() is not None:
                raise RuntimeError(f"{target.name} exited during start-up (exit status {target.process.returncode})")
            try:
                if client.post(target.url, json=body, headers=target.headers).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            time.sleep(0.005)
    raise RuntimeError(f"{target.name} did not serve a request within {timeout:.0f} s")


def run_wrk(target: Target, workdir: Path, *, connections: int, seconds: int, stream: bool) -> dict[str, float]:
    threads = min(connections, 2)
    before = cpu_seconds(target.process.pid) if target.process else 0.0
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
         "-s", str(target.script(workdir, stream)), target.url],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    cpu = (cpu_seconds(target.process.pid) - before) if target.process else 0.0
    line = next(line for line in out.stderr.splitlines() if line.startswith("WRKJSON "))
    result: dict[str, float] = json.loads(line.removeprefix("WRKJSON "))
    result["rps"] = result["requests"] / result["seconds"]
    result["cpu_seconds"] = cpu
    result["cpu_ms_per_request"] = 1000 * cpu / max(result["requests"], 1)
    return result


def summary(result: dict[str, float]) -> str:
    return (
        f"{result['rps']:9.0f} req/s  p50 {result['p50_us'] / 1000:7.2f} ms  p99 {result['p99_us'] / 1000:7.2f} ms"
        f"  cpu {result['cpu_ms_per_request']:.2f} ms/req  errors {result['errors']}"
    )


def pooled(runs: list[dict[str, float]]) -> dict[str, float]:
    """Several wrk runs of one target as one: requests, seconds, CPU and errors summed,
    latencies the median of the runs'."""
    if len(runs) == 1:
        return runs[0]
    result = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
    for name in ("requests", "seconds", "errors", "cpu_seconds"):
        result[name] = sum(run[name] for run in runs)
    result["rps"] = result["requests"] / result["seconds"]
    result["cpu_ms_per_request"] = 1000 * result["cpu_seconds"] / max(result["requests"], 1)
    return result


def configure_modelport(
    workdir: Path, port: int, mock_port: int, limits: bool = False, cache: bool = False, keyed: bool = False
) -> tuple[str, str | None, str | None, str | None]:
    """First start: create an OPENAI model pointed at the mock and a deployment of it (and,
    with `limits`, a key with every limit set; with `cache`, a key the response cache
    answers). Returns the deployment id and those keys."""
    process = start([MODELPORT, "serve"], modelport_env(workdir, port, embedded_engine="false"), workdir / "setup.log")
    base = f"http://127.0.0.1:{port}"
    headers = {"x-api-key": API_KEY}
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
            for _ in range(600):
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
            model = client.post(
                "/v4/models",
                json={
                    "name": "mock",
                    "model_type": "CHAT_COMPLETION",
                    "model_vendor": "OPENAI",
                    "model_creation_parameters": {
                        "base_url": f"http://127.0.0.1:{mock_port}/v1",
                        "model": "mock",
                        "input_cost_per_token": 1e-6,
                        "output_cost_per_token": 2e-6,
                    },
                },
            )
            model.raise_for_status()
            deployment = client.post(f"/v4/models/{model.json()['id']}/deployments", json={"name": "mock"})
            deployment.raise_for_status()
            limited_key = None
            if limits:
                created = client.post("/v4/api-keys", json=LIMITED_KEY_BODY)
                created.raise_for_status()
                limited_key = str(created.json()["key"])
            cached_key = None
            if cache:
                created = client.post("/v4/api-keys", json=CACHED_KEY_BODY)
                created.raise_for_status()
                cached_key = str(created.json()["key"])
            keyed_key = None
            if keyed:
                created = client.post("/v4/api-keys", json=KEYED_KEY_BODY)
                created.raise_for_status()
                keyed_key = str(created.json()["key"])
            return str(deployment.json()["id"]), limited_key, cached_key, keyed_key
    finally:
        stop(process)


def litellm_config(workdir: Path, mock_port: int) -> Path:
    # One model routed to the mock; no database, no callbacks, logging off.
    path = workdir / "litellm.yaml"
    path.write_text(
        "model_list:\n"
        "  - model_name: mock\n"
        "    litellm_params:\n"
        "      model: openai/mock\n"
        f"      api_base: http://127.0.0.1:{mock_port}/v1\n"
        "      api_key: sk-mock\n"
        "litellm_settings:\n"
        "  callbacks: []\n"
        "  success_callback: []\n"
        "  failure_callback: []\n"
        "  set_verbose: false\n"
        "  json_logs: false\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_KEY}\n"
        "  disable_spend_logs: true\n"
        "  disable_error_logs: true\n"
    )
    return path


def soak(target: Target, workdir: Path, total: int) -> list[tuple[int, float]]:
    """RSS after every tenth of `total` requests (non-streaming, 8 connections)."""
    assert target.process is not None
    samples = [(0, rss_mb(target.process.pid))]
    done = 0
    step = total // 10
    while done < total:
        before = done
        while done - before < step:
            done += int(run_wrk(target, workdir, connections=8, seconds=2, stream=False)["requests"])
        samples.append((done, rss_mb(target.process.pid)))
    return samples


def table(rows: list[list[str]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--litellm", help="the litellm executable in its own virtual environment (peer; optional)")
    parser.add_argument("--seconds", type=int, default=4, help="length of each wrk run")
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--workers", default="1", help="modelport worker processes; a list (1,2) runs each")
    parser.add_argument("--soak", type=int, default=0, help="also send this many requests and sample RSS")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the targets in turn this many times per scenario, pooled (CPU: summed)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="write all results here")
    parser.add_argument(
        "--limits", action="store_true", help="also modelport with a limited key (redis-server on loopback)"
    )
    parser.add_argument(
        "--cache", action="store_true", help="also modelport answering every request from its response cache"
    )
    parser.add_argument(
        "--keyed",
        action="store_true",
        help="also modelport with varied deterministic requests, by the admin key and by an allow-listed key "
        "whose cache always misses",
    )
    parser.add_argument(
        "--baseline-src", type=Path, help="also run modelport (1 worker) from this src/ (another checkout)"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    if args.limits and shutil.which("redis-server") is None:
        sys.exit("--limits needs redis-server (Debian: apt-get install redis-server)")

    workdir = Path(tempfile.mkdtemp(prefix="modelport-bench-"))
    mock_port, modelport_port, litellm_port = free_port(), free_port(), free_port()
    mock = start(
        [sys.executable, str(HERE / "mock_upstream.py"), "--port", str(mock_port)], dict(os.environ),
        workdir / "mock.log",
    )  # fmt: skip
    targets: list[Target] = []
    redis: subprocess.Popen[bytes] | None = None
    limits_env: dict[str, str] = {}
    if args.limits:
        redis_port = free_port()
        redis = start(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            dict(os.environ), workdir / "redis.log",
        )  # fmt: skip
        limits_env["redis_url"] = f"redis://127.0.0.1:{redis_port}/0"
    try:
        deployment, limited_key, cached_key, keyed_key = configure_modelport(
            workdir, modelport_port, mock_port, limits=args.limits, cache=args.cache, keyed=args.keyed
        )
        direct = Target("mock", f"http://127.0.0.1:{mock_port}/v1/chat/completions", OPENAI_BODY, {}, mock)
        wait_until_served(direct, time.perf_counter())
        targets.append(direct)

        floor_port = free_port()
        floor = Target("floor", f"http://127.0.0.1:{floor_port}/v1/chat/completions", OPENAI_BODY, {})
        started = time.perf_counter()
        floor.process = start(
            [sys.executable, str(HERE / "floor.py"), "--port", str(floor_port), "--upstream", direct.url],
            dict(os.environ), workdir / "floor.log",
        )  # fmt: skip
        floor.startup_seconds = wait_until_served(floor, started)
        targets.append(floor)

        fastapi_port = free_port()
        fastapi_floor = Target(
            "fastapi-floor",
            f"http://127.0.0.1:{fastapi_port}/v4/models/{deployment}/chat-completions",
            MODELPORT_BODY,
            {"content-type": "application/json"},
        )
        started = time.perf_counter()
        fastapi_floor.process = start(
            [sys.executable, str(HERE / "fastapi_floor.py"), "--port", str(fastapi_port), "--upstream", direct.url],
            dict(os.environ), workdir / "fastapi-floor.log",
        )  # fmt: skip
        fastapi_floor.startup_seconds = wait_until_served(fastapi_floor, started)
        targets.append(fastapi_floor)

        for workers in [int(n) for n in args.workers.split(",")]:
            port = modelport_port if workers == 1 else free_port()
            gateway = Target(
                "modelport" if workers == 1 else f"modelport-{workers}w",
                f"http://127.0.0.1:{port}/v4/models/{deployment}/chat-completions",
                MODELPORT_BODY,
                {"x-api-key": API_KEY, "content-type": "application/json"},
            )
            started = time.perf_counter()
            gateway.process = start(
                [MODELPORT, "serve"],
                modelport_env(workdir, port, embedded_engine="false", workers=str(workers), **limits_env),
                workdir / f"{gateway.name}.log",
            )
            gateway.startup_seconds = wait_until_served(gateway, started)
            targets.append(gateway)
            if limited_key is not None:
                # The same server, another key: the only difference is that its limits are counted.
                limited = Target(
                    f"{gateway.name}+limits",
                    gateway.url,
                    MODELPORT_BODY,
                    {"x-api-key": limited_key, "content-type": "application/json"},
                    gateway.process,
                    gateway.startup_seconds,
                )
                wait_until_served(limited, time.perf_counter())
                targets.append(limited)
            if cached_key is not None:
                # The same server, a key whose deterministic answers are kept: all hits but the first.
                cached = Target(
                    f"{gateway.name}+cache",
                    gateway.url,
                    {**MODELPORT_BODY, "temperature": 0},
                    {"x-api-key": cached_key, "content-type": "application/json"},
                    gateway.process,
                    gateway.startup_seconds,
                )
                wait_until_served(cached, time.perf_counter())
                targets.append(cached)
            if keyed_key is not None:
                # The same server, every request different and deterministic: by the admin key
                # (no allow-list, no cache) and by the allow-listed key whose cache misses.
                varied = {**MODELPORT_BODY, "prompt": "Say hello. @N@", "temperature": 0}
                for suffix, key in (("varied", API_KEY), ("keyed", keyed_key)):
                    keyed = Target(
                        f"{gateway.name}+{suffix}",
                        gateway.url,
                        varied,
                        {"x-api-key": key, "content-type": "application/json"},
                        gateway.process,
                        gateway.startup_seconds,
                        varying=True,
                    )
                    wait_until_served(keyed, time.perf_counter())
                    targets.append(keyed)

        if args.baseline_src:
            # The same gateway from other sources (say, before a change), interleaved with this one.
            port = free_port()
            baseline = Target(
                "baseline",
                f"http://127.0.0.1:{port}/v4/models/{deployment}/chat-completions",
                MODELPORT_BODY,
                {"x-api-key": API_KEY, "content-type": "application/json"},
            )
            env = modelport_env(workdir, port, embedded_engine="false")
            env["PYTHONPATH"] = os.pathsep.join([str(args.baseline_src.resolve()), env.get("PYTHONPATH", "")])
            started = time.perf_counter()
            # The installed console script names this checkout's module; the other
            # checkout's command line may live elsewhere (modelport/cli.py before 0.2).
            command = (
                "import importlib.util, sys; sys.argv[0] = 'modelport'; "
                "cli = importlib.util.find_spec('modelport.cli'); "
                "name = 'modelport.cli.main' if cli.submodule_search_locations else 'modelport.cli'; "
                "importlib.import_module(name).app()"
            )
            baseline.process = start([sys.executable, "-c", command, "serve"], env, workdir / "baseline.log")
            baseline.startup_seconds = wait_until_served(baseline, started)
            targets.append(baseline)

        if args.litellm:
            peer = Target(
                "litellm",
                f"http://127.0.0.1:{litellm_port}/v1/chat/completions",
                OPENAI_BODY,
                {"content-type": "application/json", "authorization": f"Bearer {LITELLM_KEY}"},
            )
            env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_MODE": "PRODUCTION", "DISABLE_ADMIN_UI": "True"}
            env.pop("DATABASE_URL", None)
            started = time.perf_counter()
            peer.process = start(
                [args.litellm, "--config", str(litellm_config(workdir, mock_port)), "--port", str(litellm_port),
                 "--host", "127.0.0.1", "--num_workers", "1"],
                env, workdir / "litellm.log",
            )  # fmt: skip
            peer.startup_seconds = wait_until_served(peer, started, timeout=180)
            targets.append(peer)

        for target in targets:
            if target.process is not None:
                # A few requests so lazy imports are done before "after start-up".
                wait_until_served(target, time.perf_counter())
                target.rss_after_start = rss_mb(target.process.pid)

        results: dict[str, dict[str, dict[str, float]]] = {t.name: {} for t in targets}
        for connections in [int(c) for c in args.concurrency.split(",")]:
            for stream in (False, True):
                key = f"{'stream' if stream else 'json'}@{connections}"
                runs: dict[str, list[dict[str, float]]] = {t.name: [] for t in targets}
                for _ in range(args.repeat):  # interleaved: each target in turn, same conditions
                    for target in targets:
                        result = run_wrk(target, workdir, connections=connections, seconds=args.seconds, stream=stream)
                        runs[target.name].append(result)
                        print(f"{target.name:9} {key:10} {summary(result)}", flush=True)
                for name, each in runs.items():
                    results[name][key] = pooled(each)

        soak_samples = soak(next(t for t in targets if t.name == "modelport"), workdir, args.soak) if args.soak else []
        report(targets, results, soak_samples)
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "results": results,
                        "startup_seconds": {t.name: t.startup_seconds for t in targets},
                        "rss_after_start_mb": {t.name: t.rss_after_start for t in targets},
                        "rss_after_run_mb": {t.name: rss_mb(t.process.pid) for t in targets if t.process},
                        "soak": soak_samples,
                    },
                    indent=2,
                )
            )
    finally:
        for target in targets:
            stop(target.process)
        stop(mock)
        stop(redis)


def report(
    targets: list[Target], results: dict[str, dict[str, dict[str, float]]], soak_samples: list[tuple[int, float]]
) -> None:
    print()
    rows = []
    for key in results["mock"]:
        for target in targets:
            r = results[target.name][key]
            cpu = f"{r['cpu_ms_per_request']:.2f}" if target.process else ""
            rows.append([key, target.name, f"{r['rps']:,.0f}", f"{r['p50_us'] / 1000:.2f}", f"{r['p99_us'] / 1000:.2f}",
                         cpu, str(int(r["errors"]))])  # fmt: skip
    print(table(rows, ["run", "target", "req/s", "p50 ms", "p99 ms", "CPU ms/req", "errors"]))
    print()
    mock = results["mock"]
    rows = []

    def added(target: str, key: str) -> str:
        if key not in mock:
            return "n/a"
        return f"{(results[target][key]['p50_us'] - mock[key]['p50_us']) / 1000:.2f}"

    for target in targets[1:]:
        if target.name in ("floor", "fastapi-floor"):
            continue
        rows.append(
            [
                target.name,
                added(target.name, "json@1"),
                added(target.name, "stream@1"),
                f"{target.startup_seconds:.2f}",
                f"{target.rss_after_start:.0f}",
                f"{rss_mb(target.process.pid):.0f}" if target.process else "",
            ]
        )
    print(table(rows, ["gateway", "added p50 ms (json, c=1)", "added p50 ms (stream, c=1)", "start-up s",
                       "RSS after start MB", "RSS after run MB"]))  # fmt: skip
    best_gateway = max(r["rps"] for name, runs in results.items() if name != "mock" for r in runs.values())
    best_mock = max(r["rps"] for r in mock.values())
    verdict = "ok" if best_mock >= 3 * best_gateway else "TOO SLOW: gateway numbers are capped by the mock"
    print(f"\nmock check: mock peak {best_mock:,.0f} req/s vs best gateway {best_gateway:,.0f} req/s: {verdict}")
    names = [t.name for t in targets]
    floor = results["floor"]
    print()
    rows = []
    for key in floor:
        for name in names:
            if name.startswith("modelport") or name == "fastapi-floor":
                r = results[name][key]
                rows.append([key, name, f"{r['cpu_ms_per_request'] / floor[key]['cpu_ms_per_request']:.2f}x",
                             f"{r['p99_us'] / max(r['p50_us'], 1):.1f}x",
                             f"{(r['p99_us'] - mock[key]['p99_us']) / 1000:.2f}"])  # fmt: skip
    print(table(rows, ["run", "gateway", "CPU/request vs floor", "p99 / p50", "added p99 ms"]))
    for name in names:
        if name.startswith("modelport-"):
            for key in results["modelport"]:
                ratio = results[name][key]["rps"] / results["modelport"][key]["rps"]
                print(f"{name} / modelport (1 worker) throughput, {key}: {ratio:.2f}x")
    if "modelport+keyed" in names:
        for key in results["modelport+keyed"]:
            ratio = (
                results["modelport+keyed"][key]["cpu_ms_per_request"]
                / results["modelport+varied"][key]["cpu_ms_per_request"]
            )
            print(f"modelport+keyed / modelport+varied CPU per request, {key}: {ratio:.3f}")
    if "litellm" in names:
        for mode in ("json", "stream"):
            ratio = results["modelport"][f"{mode}@32"]["rps"] / results["litellm"][f"{mode}@32"]["rps"]
            print(f"modelport / litellm throughput at c=32 ({mode}): {ratio:.1f}x")
    if soak_samples:
        print()
        print(table([[f"{n:,}", f"{mb:.1f}"] for n, mb in soak_samples], ["requests served", "modelport RSS MB"]))


if __name__ == "__main__":
    main()
