#!/usr/bin/env python3
"""Side by side: a verinet node (onnxruntime and tract backends) against a careful Python
server (FastAPI + uvicorn + onnxruntime) and against onnxruntime called in-process, with the
same load generator (wrk), the same inputs and the same number of execution threads.

    cargo build --release --locked -p verinet
    apt-get install -y wrk                                   # 4.1.0
    target/pyenv/bin/pip install 'fastapi==0.165.0' 'uvicorn[standard]==0.55.0' 'orjson==3.13.0'
    target/pyenv/bin/python scripts/bench_vs_python.py --duration 15     # from the repo root

Pinned (target/pyenv): fastapi 0.165.0, starlette 1.10.0, uvicorn 0.55.0 with uvloop 0.23.0
and httptools 0.9.0, orjson 3.13.0, onnxruntime 1.32.0, numpy 2.4.6; wrk 4.1.0 (Debian).

Systems, started one at a time (never two servers up at once), each on a free 127.0.0.1 port:
- verinet-ort: `target/release/verinet up --backend onnxruntime` (release build, SQLite in a fresh
  temporary data dir, the node's defaults otherwise: usage events, receipts, info logging to a
  file), libonnxruntime.so from target/pyenv's onnxruntime package (ORT_DYLIB_PATH), so the node
  and Python run the very same onnxruntime build;
- verinet-tract: the same node with `--backend tract`;
- python-server: scripts/bench_vs_python_server.py, FastAPI + uvicorn, 1 worker process, one
  cached InferenceSession per model (intra_op_num_threads=1, inter_op_num_threads=1), orjson;
- python-server-inline: the same server, session.run always inline (see threads, below);
- ort-in-process: session.run in a loop in this process on the same (pre-built) numpy inputs, no
  HTTP, no JSON: the ceiling.

Models: `digits` (models/digits-mlp.onnx, bundled in the node; input fixtures/digits/sample.json)
and `minilm-int8` (target/test-models/minilm/model.onnx, published to the node at its first start
with `verinet model push`; input: case --minilm-case of its reference.json, default 0, a [2,12]
batch). Every server and the in-process session must give the reference answer before it is
timed (digits: the same label; MiniLM: every output within --tol, default 1e-4, absolute), and a
wrk run that saw any error or non-2xx answer fails the benchmark, so a broken server cannot look
fast.

Load and threads. wrk -c1 -t1 and wrk -c8 -t2 (2 cores: wrk shares them with the server, the same
for every server), --warmup seconds of the same load first, then --duration seconds measured
(--latency histogram: p50, p99). Execution threads are matched per row:
- 1 connection: 1 thread everywhere. The node runs with `[runtime] max_concurrency = 1` (each
  onnxruntime session of the node has intra/inter-op threads = 1 already), the Python server
  runs session.run inline on its event loop (one at a time), in-process is 1 Python thread.
- 8 connections: --threads-c8 threads (default 2, one per core). The node runs with
  `max_concurrency = 2`; the Python server (still 1 uvicorn worker) runs session.run in a
  thread behind an anyio.CapacityLimiter(2) (onnxruntime releases the GIL, so two runs overlap);
  in-process is 2 Python threads looping on the one shared session.
  python-server-inline (8 connections only) is the same Python server left at one run at a time
  on its event loop: a single worker's other sensible setup, which wins for a tiny model (no
  thread hop per call) and loses for a big one (no overlap). Both are reported, so the
  comparison does not hinge on which of the two a Python user would pick.
Each server is restarted between the two loads so its config is exactly the row's.

Output: a markdown table (req/s, p50, p99) and the ratios the issue asks for, with its goals:
MiniLM verinet(ort) >= 1.0x python-server and >= 0.8x ort-in-process; digits >= 2x python-server.
For the node, the median of its own timings_ms (compute, total inside the node) over 50
sequential calls shows where a request's time goes. --json FILE saves every number.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import glob
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
LUA = SCRIPTS / "bench_vs_python.lua"
SERVER = SCRIPTS / "bench_vs_python_server.py"
MINILM_NAME = "minilm-int8"
SYSTEMS = ["verinet-ort", "verinet-tract", "python-server", "python-server-inline"]
GOALS = {  # (model, numerator, denominator) -> minimum ratio
    ("minilm-int8", "verinet-ort", "python-server"): 1.0,
    ("minilm-int8", "verinet-ort", "ort-in-process"): 0.8,
    ("digits", "verinet-ort", "python-server"): 2.0,
    # the same goals against the Python server's other 8-connection setup (see the docstring)
    ("minilm-int8", "verinet-ort", "python-server-inline"): 1.0,
    ("digits", "verinet-ort", "python-server-inline"): 2.0,
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Child processes: each in its own process group, stopped by pid (never by name) on any exit.

CHILDREN: list[subprocess.Popen] = []


def spawn(cmd: list[str], logfile: Path, env: dict | None = None) -> subprocess.Popen:
    out = open(logfile, "ab")
    p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         env=env, cwd=ROOT, start_new_session=True)
    out.close()
    CHILDREN.append(p)
    return p


def stop(p: subprocess.Popen, grace: float = 15.0) -> None:
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
    if p in CHILDREN:
        CHILDREN.remove(p)


def stop_all() -> None:
    for p in list(CHILDREN):
        stop(p, grace=5.0)


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


# ---------------------------------------------------------------------------------------------
# HTTP helpers (stdlib only; wrk does the load).

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None, timeout: float = 60.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method,
                                 headers={"Content-Type": "application/json"} if body is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_health(base: str, proc: subprocess.Popen, logfile: Path, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} at start; log {logfile}:\n{tail(logfile)}")
        try:
            status, body = http("GET", base + "/health", timeout=2.0)
            if status == 200:
                return json.loads(body)
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"no /health from {base} within {timeout:.0f} s; log {logfile}:\n{tail(logfile)}")


def tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------
# Inputs and reference answers.

def flat(x) -> list:
    if isinstance(x, list):
        out = []
        for v in x:
            out.extend(flat(v)) if isinstance(v, list) else out.append(v)
        return out
    return [x]


class Case:
    """One model's request body (the same bytes for every server) and its reference outputs."""

    def __init__(self, model: str, onnx: Path, inputs: dict, outputs: dict, check: str, tol: float, work: Path):
        self.model, self.onnx, self.inputs, self.outputs, self.check, self.tol = model, onnx, inputs, outputs, check, tol
        self.body = json.dumps({"model": model, "inputs": inputs}, separators=(",", ":")).encode()
        self.body_file = work / f"body-{model}.json"
        self.body_file.write_bytes(self.body)

    def verify(self, outputs: dict, who: str) -> str:
        """Raises unless `outputs` ({name: tensor json}) is the reference answer; returns a note."""
        if self.check == "label":
            got = flat(outputs["label"]["data"])
            want = flat(self.outputs["label"]["data"])
            if got != want:
                raise RuntimeError(f"{who} {self.model}: label {got}, reference {want}")
            p = max(abs(a - b) for a, b in zip(flat(outputs["probabilities"]["data"]), flat(self.outputs["probabilities"]["data"])))
            return f"label {got} ok (probabilities max |diff| {p:.2e})"
        worst = 0.0
        for name, ref in self.outputs.items():
            if name not in outputs:
                raise RuntimeError(f"{who} {self.model}: output {name!r} missing (got {sorted(outputs)})")
            t = outputs[name]
            if list(t["shape"]) != list(ref["shape"]):
                raise RuntimeError(f"{who} {self.model}: {name} shape {t['shape']}, reference {ref['shape']}")
            got, want = flat(t["data"]), flat(ref["data"])
            if len(got) != len(want) or any(g is None for g in got):
                raise RuntimeError(f"{who} {self.model}: {name} has {len(got)} values (or NaN), reference {len(want)}")
            d = max(abs(g - w) for g, w in zip(got, want))
            if not d <= self.tol:
                raise RuntimeError(f"{who} {self.model}: {name} max |diff| {d:.3e} > {self.tol:g}")
            worst = max(worst, d)
        return f"outputs within {self.tol:g} (max |diff| {worst:.2e})"


def load_cases(args, work: Path) -> dict[str, Case]:
    cases = {}
    if "digits" in args.models:
        sample = json.loads((ROOT / "fixtures/digits/sample.json").read_text())
        ref = json.loads((ROOT / "fixtures/digits/reference.json").read_text())
        match = [c for c in ref["cases"] if c["inputs"] == sample]
        if not match:
            raise RuntimeError("fixtures/digits/sample.json is not one of reference.json's cases")
        cases["digits"] = Case("digits", ROOT / "models/digits-mlp.onnx", sample, match[0]["outputs"], "label", args.tol, work)
    if "minilm" in args.models:
        d = ROOT / "target/test-models/minilm"
        if not (d / "model.onnx").exists():
            raise RuntimeError(f"{d}/model.onnx missing: run scripts/fetch_test_models.py (or scripts/test.sh) first")
        c = json.loads((d / "reference.json").read_text())["cases"][args.minilm_case]
        cases[MINILM_NAME] = Case(MINILM_NAME, d / "model.onnx", c["inputs"], c["outputs"], "close", args.tol, work)
    return cases


def shape_of(case: Case) -> str:
    return "x".join(str(d) for d in next(iter(case.inputs.values()))["shape"])


# ---------------------------------------------------------------------------------------------
# Servers.

class Server:
    def __init__(self, system: str, threads: int, args, work: Path, cases: dict[str, Case], ort_lib: str):
        self.system, self.threads, self.args, self.work, self.cases, self.ort_lib = system, threads, args, work, cases, ort_lib
        self.port = free_port()
        # what this server actually runs at once: python-server-inline runs one at a time
        self.exec_threads = 1 if system == "python-server-inline" else threads
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.logfile = work / "logs" / f"{system}-t{threads}.log"

    def start(self) -> None:
        if self.system.startswith("verinet-"):
            self._start_node({"verinet-ort": "onnxruntime", "verinet-tract": "tract"}[self.system])
        else:
            cmd = [sys.executable, str(SERVER), "--port", str(self.port), "--max-concurrency", str(self.exec_threads)]
            for c in self.cases.values():
                cmd += ["--model", f"{c.model}={c.onnx}"]
            self.proc = spawn(cmd, self.logfile)
            wait_health(self.base, self.proc, self.logfile)

    def _start_node(self, backend: str) -> None:
        cfg = self.work / f"node-t{self.threads}.toml"
        empty = self.work / "no-language-models"  # keep the bundled chat/embedding models out
        empty.mkdir(exist_ok=True)
        cfg.write_text(f"[runtime]\nmax_concurrency = {self.threads}\n\n" + self.args.node_config.replace("\\n", "\n") + "\n")
        env = dict(os.environ, ORT_DYLIB_PATH=self.ort_lib)
        for kv in self.args.verinet_env:
            k, _, v = kv.partition("=")
            env[k] = v
        cmd = [str(self.args.verinet), "up", "--listen", f"127.0.0.1:{self.port}", "--data-dir",
               str(self.work / "node-data"), "--backend", backend, "--config", str(cfg), "--language-models", str(empty)]
        self.proc = spawn(cmd, self.logfile, env)
        health = wait_health(self.base, self.proc, self.logfile)
        if backend not in json.dumps(health.get("backend", "")):
            raise RuntimeError(f"node reports backend {health.get('backend')!r}, wanted {backend}")
        if MINILM_NAME in self.cases:
            status, _ = http("GET", f"{self.base}/v1/models/{MINILM_NAME}")
            if status == 404:
                self._publish(self.cases[MINILM_NAME].onnx)

    def _publish(self, onnx: Path) -> None:
        wallet = self.work / "wallet.key"
        v = str(self.args.verinet)
        if not wallet.exists():
            subprocess.run([v, "wallet", "new", "--wallet", str(wallet)], check=True, capture_output=True)
        log(f"publishing {onnx} as {MINILM_NAME}")
        r = subprocess.run([v, "model", "push", str(onnx), "--kind", "onnx", "--name", MINILM_NAME, "--version", "1.0.0",
                            "--node", self.base, "--wallet", str(wallet)], capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"verinet model push failed:\n{r.stdout}\n{r.stderr}")

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def check(self, case: Case) -> str:
        status, body = http("POST", self.base + "/v1/infer", case.body, timeout=120)
        if status != 200:
            raise RuntimeError(f"{self.system} {case.model}: HTTP {status}: {body[:500]!r}")
        return case.verify(json.loads(body)["outputs"], self.system)

    def node_timings(self, case: Case, n: int) -> dict | None:
        """Median timings_ms the node reports for itself over n sequential calls."""
        if not self.system.startswith("verinet-"):
            return None
        rows = []
        for _ in range(n):
            status, body = http("POST", self.base + "/v1/infer", case.body)
            if status != 200:
                raise RuntimeError(f"{self.system} {case.model}: HTTP {status}")
            rows.append(json.loads(body)["timings_ms"])
        return {k: statistics.median(r[k] for r in rows) for k in ("queue", "compute", "total")}


def wrk(url: str, case: Case, conns: int, threads: int, seconds: float) -> dict:
    cmd = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{max(1, round(seconds))}s", "--timeout", "30s",
           "--latency", "-s", str(LUA), url]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, BENCH_BODY=str(case.body_file)),
                       timeout=seconds + 120)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if r.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    s = json.loads(line.removeprefix("BENCH_JSON "))
    s["errors"] = sum(s[k] for k in ("connect", "read", "write", "status", "timeout"))
    s["rps"] = s["requests"] / (s["duration_us"] / 1e6)
    return s


# ---------------------------------------------------------------------------------------------
# onnxruntime in-process.

def in_process(cases: dict[str, Case], threads_list: list[int], args) -> list[dict]:
    sys.path.insert(0, str(SCRIPTS))
    from bench_vs_python_server import load_session, to_array  # same session options as the server

    rows = []
    for case in cases.values():
        sess = load_session(str(case.onnx))
        names = [o.name for o in sess.get_outputs()]
        feeds = {i.name: to_array(case.inputs[i.name]) for i in sess.get_inputs()}
        outs = sess.run(names, feeds)
        note = case.verify({n: {"shape": list(a.shape), "data": a.reshape(-1).tolist()} for n, a in zip(names, outs)},
                           "ort-in-process")
        log(f"ort-in-process {case.model}: {note}")
        for threads in threads_list:
            loop_for(sess, names, feeds, threads, args.warmup)
            calls, secs, lat = loop_for(sess, names, feeds, threads, args.duration)
            lat.sort()
            rows.append({"model": case.model, "system": "ort-in-process", "threads": threads, "conns": None,
                         "rps": calls / secs, "p50_ms": pct(lat, 50) / 1e6, "p99_ms": pct(lat, 99) / 1e6,
                         "requests": calls, "errors": 0})
            log(f"ort-in-process {case.model} threads={threads}: {calls / secs:.1f} calls/s")
    return rows


def loop_for(sess, names, feeds, threads: int, seconds: float):
    lat: list[list[int]] = [[] for _ in range(threads)]
    start = time.perf_counter_ns()
    stop_at = start + int(seconds * 1e9)

    def work(mine: list[int]) -> None:
        run, clock = sess.run, time.perf_counter_ns
        while True:
            t0 = clock()
            run(names, feeds)
            t1 = clock()
            mine.append(t1 - t0)
            if t1 >= stop_at:
                break

    ts = [threading.Thread(target=work, args=(lat[i],)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    secs = (time.perf_counter_ns() - start) / 1e9
    all_lat = [x for part in lat for x in part]
    return len(all_lat), secs, all_lat


def pct(sorted_vals: list, p: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


# ---------------------------------------------------------------------------------------------
# Report.

def fmt_ms(x: float) -> str:
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.1f}"


def fmt_rps(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def report(rows: list[dict], cases: dict[str, Case], levels: list[tuple[int, int, int]], diag: dict) -> str:
    out = []
    out.append("| model | load | system | exec threads | req/s | p50 ms | p99 ms |")
    out.append("|---|---|---|---|---|---|---|")
    for case in cases.values():
        for conns, _wt, threads in levels:
            for r in rows:
                if r["model"] != case.model or r["threads"] != threads:
                    continue
                if r["system"] == "ort-in-process":
                    load, sysname = f"{threads} thread{'s' if threads > 1 else ''}, no HTTP", "onnxruntime in-process"
                elif r["conns"] == conns:
                    load, sysname = f"{conns} conn{'s' if conns > 1 else ''}", r["system"]
                else:
                    continue
                flag = " (!errors)" if r["errors"] else ""
                out.append(f"| {case.model} [{shape_of(case)}] | {load} | {sysname} | {r.get('exec_threads', threads)} | {fmt_rps(r['rps'])}{flag} "
                           f"| {fmt_ms(r['p50_ms'])} | {fmt_ms(r['p99_ms'])} |")
    out.append("")
    out.append("| model | load (threads) | ratio (req/s) | value | goal |")
    out.append("|---|---|---|---|---|")
    get = {(r["model"], r["system"], r["threads"]): r for r in rows}
    pairs = [("verinet-ort", "python-server"), ("verinet-ort", "python-server-inline"), ("verinet-ort", "ort-in-process"),
             ("verinet-tract", "python-server"),
             ("verinet-tract", "ort-in-process"), ("python-server", "ort-in-process")]
    for case in cases.values():
        for conns, _wt, threads in levels:
            for a, b in pairs:
                ra, rb = get.get((case.model, a, threads)), get.get((case.model, b, threads))
                if not ra or not rb:
                    continue
                v = ra["rps"] / rb["rps"]
                goal = GOALS.get((case.model, a, b))
                g = "" if goal is None else f">= {goal:g}x: {'met' if v >= goal else 'MISSED'}"
                out.append(f"| {case.model} | {conns} conn ({threads} thr) | {a} / {b} | {v:.2f}x | {g} |")
    if diag:
        out.append("")
        out.append("Node's own timings_ms (median of 50 sequential calls, 1 connection) against wrk's p50 at 1 connection:")
        out.append("")
        out.append("| model | system | node compute ms | node total ms | wrk p50 ms | outside the node's total ms |")
        out.append("|---|---|---|---|---|---|")
        for (model, system), t in diag.items():
            r = next((r for r in rows if r["model"] == model and r["system"] == system and r["conns"] == 1), None)
            p50 = r["p50_ms"] if r else float("nan")
            out.append(f"| {model} | {system} | {t['compute']:.3f} | {t['total']:.3f} | {fmt_ms(p50)} | {p50 - t['total']:.3f} |")
    return "\n".join(out)


def machine_note() -> str:
    cpu = ""
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    la = os.getloadavg()
    return (f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs ({cpu}), {platform.platform()}, "
            f"load average at start {la[0]:.2f}")


# ---------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description="verinet vs a Python onnxruntime server vs onnxruntime in-process (wrk).")
    ap.add_argument("--duration", type=float, default=15.0, help="seconds measured per cell (default 15)")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of the same load before each cell (default 3)")
    ap.add_argument("--systems", default=",".join(SYSTEMS + ["ort-in-process"]),
                    help="comma list of verinet-ort, verinet-tract, python-server, python-server-inline, ort-in-process")
    ap.add_argument("--models", default="digits,minilm", help="comma list of digits, minilm")
    ap.add_argument("--conns", default="1,8", help="wrk connections (1 uses -t1 and 1 exec thread, else -t2 and --threads-c8)")
    ap.add_argument("--threads-c8", type=int, default=2, help="execution threads for the loads above 1 connection (default 2)")
    ap.add_argument("--minilm-case", type=int, default=0, help="reference.json case used as MiniLM's input (default 0: [2,12])")
    ap.add_argument("--tol", type=float, default=1e-4, help="absolute tolerance of MiniLM's outputs (default 1e-4)")
    ap.add_argument("--verinet", type=Path, default=ROOT / "target/release/verinet")
    ap.add_argument("--node-config", default="", metavar="TOML",
                    help="diagnostics: more node config after [runtime], e.g. '[flywheel]\\nevents = false'")
    ap.add_argument("--verinet-env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for the node (diagnostics, e.g. VERINET_LOG=warn)")
    ap.add_argument("--work-dir", type=Path, help="keep data dirs, bodies and logs here (default: a temporary dir, removed)")
    ap.add_argument("--json", type=Path, help="write every number here")
    args = ap.parse_args()
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    for s in systems:
        if s not in SYSTEMS + ["ort-in-process"]:
            ap.error(f"unknown system {s!r}")
    levels = [(c, 1 if c == 1 else 2, 1 if c == 1 else args.threads_c8) for c in (int(x) for x in args.conns.split(","))]

    if any(s.startswith("verinet-") for s in systems) and not args.verinet.exists():
        ap.error(f"{args.verinet} missing: cargo build --release --locked -p verinet")
    if shutil.which("wrk") is None and any(s in SYSTEMS for s in systems):
        ap.error("wrk not found: apt-get install -y wrk")
    import onnxruntime  # the node's backend library comes from the same package

    libs = sorted(glob.glob(str(Path(onnxruntime.__file__).parent / "capi" / "libonnxruntime.so*")))
    if not libs:
        ap.error("libonnxruntime.so not found in the onnxruntime package")
    ort_lib = os.path.abspath(libs[0])

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    atexit.register(stop_all)
    tmp = None
    if args.work_dir:
        work = args.work_dir.resolve()
        if (work / "node-data").exists():
            ap.error(f"{work}/node-data exists: use a fresh --work-dir")
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.mkdtemp(prefix="bench_vs_python.")
        work = Path(tmp)
    (work / "logs").mkdir(exist_ok=True)

    note = machine_note()
    log(f"{note}; work dir {work}")
    rows: list[dict] = []
    diag: dict = {}
    failed = False
    try:
        cases = load_cases(args, work)
        for system in [s for s in SYSTEMS if s in systems]:
            for conns, wthreads, threads in levels:
                if system == "python-server-inline" and conns == 1:
                    continue  # at 1 connection it is python-server itself
                srv = Server(system, threads, args, work, cases, ort_lib)
                log(f"starting {system} (exec threads {srv.exec_threads}) on {srv.base}")
                srv.start()
                try:
                    for case in cases.values():
                        log(f"{system} {case.model}: {srv.check(case)}")
                        if conns == 1:
                            t = srv.node_timings(case, 50)
                            if t:
                                diag[(case.model, system)] = t
                        wrk(srv.base + "/v1/infer", case, conns, wthreads, args.warmup)
                        s = wrk(srv.base + "/v1/infer", case, conns, wthreads, args.duration)
                        if s["errors"]:
                            failed = True
                            log(f"!! {system} {case.model} c{conns}: {s['errors']} errors/non-2xx answers: {s}")
                        rows.append({"model": case.model, "system": system, "conns": conns, "threads": threads,
                                     "exec_threads": srv.exec_threads,
                                     "rps": s["rps"], "p50_ms": s["p50_us"] / 1e3, "p99_ms": s["p99_us"] / 1e3,
                                     "requests": s["requests"], "errors": s["errors"], "wrk": s})
                        log(f"{system} {case.model} c{conns}: {s['rps']:.1f} req/s, p50 {s['p50_us'] / 1e3:.3f} ms, "
                            f"p99 {s['p99_us'] / 1e3:.3f} ms")
                        # the answer again after the load: a server that broke under it does not pass
                        srv.check(case)
                finally:
                    srv.stop()
        if "ort-in-process" in systems:
            rows += in_process(cases, [t for _c, _w, t in levels], args)
    except BaseException:
        log(f"stopped early; servers' logs in {work}/logs")
        raise
    finally:
        stop_all()

    table = report(rows, cases, levels, diag)
    print(f"\n{note}\nwrk 4.1.0, --duration {args.duration:g} s, --warmup {args.warmup:g} s per cell\n")
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"machine": note, "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                         "node_timings": {f"{m}/{s}": t for (m, s), t in diag.items()}}, indent=1))
    if tmp and not failed:
        shutil.rmtree(tmp, ignore_errors=True)
    elif tmp:
        log(f"logs kept in {work}/logs")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
