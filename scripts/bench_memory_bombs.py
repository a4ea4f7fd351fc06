"""Peak memory of a node under body bombs (issue 14, item 4): 8 concurrent 60 MiB JSON bodies.

Starts `verinet up` (VERINET_BIN, default target/debug/verinet) on a fresh data dir, once without
and once with the bundled language models (--language-models DIR, default target/test-models),
sends each attack with 8 clients at once, and reads the node's VmHWM (peak RSS, reset between
attacks through /proc/PID/clear_refs) and VmRSS. Prints one table row per attack.

Attacks (60 MiB each):
  zeros, dtype first   {"model":"digits","inputs":{"pixels":{"dtype":"float32","shape":[1,64],"data":[0,0,...]}}}
  zeros, data first    the same with "data" before "dtype" and "shape"
  padded valid         a valid digits request followed by 60 MiB of spaces (the body must be read whole)

Run: target/pyenv/bin/python scripts/bench_memory_bombs.py [--language-models DIR]
"""
import argparse
import http.client
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time

MIB = 1 << 20
SIZE = 60 * MIB
CLIENTS = 8


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        m = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M)
    return int(m.group(1)) / 1024


def post(port, body, out, i):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        c.request("POST", "/v1/infer", body=body, headers={"content-type": "application/json"})
        r = c.getresponse()
        r.read()
        out[i] = r.status
    except Exception as e:  # the node may close a connection it refuses
        out[i] = type(e).__name__


def valid_body():
    sample = open(os.path.join(os.path.dirname(__file__), "..", "fixtures", "digits", "sample.json"), "rb").read()
    return b'{"model":"digits","inputs":' + sample + b"}"


def bodies():
    zeros = b"0," * ((SIZE - 200) // 2) + b"0"
    valid = valid_body()
    return {
        "zeros, dtype first": b'{"model":"digits","inputs":{"pixels":{"dtype":"float32","shape":[1,64],"data":[' + zeros + b"]}}}",
        "zeros, data first": b'{"model":"digits","inputs":{"pixels":{"data":[' + zeros + b'],"dtype":"float32","shape":[1,64]}}}',
        "padded valid": valid + b" " * (SIZE - len(valid)),
    }


def run(binary, llm_dir):
    data = tempfile.mkdtemp(prefix="verinet-bombs-")
    port = free_port()
    args = [binary, "up", "--data-dir", data, "--listen", f"127.0.0.1:{port}"]
    args += ["--language-models", llm_dir] if llm_dir else ["--language-models", os.path.join(data, "none")]
    node = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        # One real call so the digits plan is compiled and cached.
        first = [None]
        post(port, valid_body(), first, 0)
        assert first[0] == 200, f"a digits call answered {first[0]}"

        base = status(node.pid, "VmRSS")
        rows = []
        for name, body in BODIES.items():
            with open(f"/proc/{node.pid}/clear_refs", "w") as f:
                f.write("5")
            out = [None] * CLIENTS
            threads = [threading.Thread(target=post, args=(port, body, out, i)) for i in range(CLIENTS)]
            started = time.time()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            took = time.time() - started
            peak = status(node.pid, "VmHWM")
            counts = {}
            for s in out:
                counts[s] = counts.get(s, 0) + 1
            rows.append((name, counts, base, peak, status(node.pid, "VmRSS"), took))
        return rows
    finally:
        node.terminate()
        node.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


BODIES = {}


def main():
    BODIES.update(bodies())
    ap = argparse.ArgumentParser()
    ap.add_argument("--language-models", default="target/test-models")
    a = ap.parse_args()
    binary = os.environ.get("VERINET_BIN", "target/debug/verinet")
    print(f"| node | attack (8 x 60 MiB at once) | answers | RSS before (MiB) | peak RSS (MiB) | peak - before | RSS after | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for label, llm in [("no language models", None), ("bundled language models", a.language_models)]:
        for name, counts, base, peak, after, took in run(binary, llm):
            answers = ", ".join(f"{n} x {s}" for s, n in sorted(counts.items(), key=str))
            print(f"| {label} | {name} | {answers} | {base:.0f} | {peak:.0f} | {peak - base:.0f} | {after:.0f} | {took:.1f} |")


if __name__ == "__main__":
    main()
