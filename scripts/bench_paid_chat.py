#!/usr/bin/env python3
"""Throughput of paid and verified chat against free chat on one verinet node (issue 12).

Starts a release `verinet up` twice on fresh data dirs with the bundled SmolLM2 chat model:

- **free**: no fees, `verification: none`; the load generator POSTs plain OpenAI chat calls.
- **paid**: fees per 1,000 tokens, `verification: none`; the load generator pays each call
  with the official x402 client (`x402HttpxClient`, scheme `upto` or `exact`: the 402 round
  trip, EIP-712 signing, the escrow, the capture of what was used), as an application would.
- **sampled**: as paid, with one validator, and every call asks for `verification: sampled`
  at `--sample-rate` (default 0.1): the breakdown is free -> paid (what paying costs) -> sampled
  (what checking costs).

Both runs use the same load generator: `--concurrency` tasks each making calls one after the
other until `--calls` calls are done, non-streamed, temperature 0, `max_tokens`, distinct
prompts (the same list in both runs). Reports completion tokens per second of wall time, calls
per second, and the ratios paid/free and sampled/free per repetition; the order of the three
runs rotates from one repetition to the next. Usage:

    cargo build --release -p verinet
    target/pyenv/bin/python scripts/bench_paid_chat.py --reps 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_llm import CHAT_MODEL, ROOT, VERINET_BIN, Server, free_port, wait_ready  # noqa: E402


def start(tmp: Path, mode: str, sample_rate: float) -> Server:
    paid = mode != "free"
    port = free_port()
    conf = tmp / "verinet.toml"
    lines = ["[server]", "request_timeout_secs = 3600"]
    if paid:
        lines += ["[payments]", 'operator_fee_per_1k_tokens = "1000000000000"', 'sampled_fee_per_1k_tokens = "100000000000"',
                  "protocol_fee_bps = 100"]
    if mode == "sampled":
        lines += ["[verification]", "validators = 1", f"sample_rate = {sample_rate}"]
    conf.write_text("\n".join(lines) + "\n")
    binary = tmp / "verinet"
    shutil.copy2(VERINET_BIN, binary)
    log = tmp / "verinet.log"
    cmd = [str(binary), "up", "--data-dir", str(tmp / "data"), "--listen", f"127.0.0.1:{port}", "--config", str(conf)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    s = Server("verinet", port, proc, log)
    wait_ready(port, f"/v1/models/{CHAT_MODEL}", proc, "verinet")
    return s


def body(i: int, max_tokens: int, mode: str) -> dict:
    b = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": f"{i}. Tell me a short story about a {['cat', 'ship', 'tree', 'robot'][i % 4]}."}],
         "max_tokens": max_tokens, "temperature": 0}
    if mode == "sampled":
        b["verification"] = "sampled"
    return b


async def load(port: int, mode: str, calls: int, concurrency: int, max_tokens: int, scheme: str) -> dict:
    import httpx
    from eth_account import Account
    from x402 import x402Client
    from x402.http.clients.httpx import x402HttpxClient
    from x402.mechanisms.evm.exact import ExactEvmScheme
    from x402.mechanisms.evm.signers import EthAccountSigner
    from x402.mechanisms.evm.upto import UptoEvmScheme

    paid = mode != "free"
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    acct = Account.create()
    if paid:
        async with httpx.AsyncClient() as h:
            r = await h.post(f"http://127.0.0.1:{port}/v1/faucet", json={"address": acct.address})
            r.raise_for_status()
    client = x402Client()
    signer = EthAccountSigner(acct)
    client.register("eip155:*", UptoEvmScheme(signer) if scheme == "upto" else ExactEvmScheme(signer=signer))
    client.set_spend_controls({"allowed_assets": True})
    queue = list(range(calls))
    tokens, checks, done = 0, {}, 0

    async def worker():
        nonlocal tokens, done
        http = x402HttpxClient(client, timeout=3600) if paid else httpx.AsyncClient(timeout=3600)
        async with http:
            while queue:
                i = queue.pop(0)
                r = await http.post(url, json=body(i, max_tokens, mode))
                if r.status_code != 200:
                    raise RuntimeError(f"call {i}: {r.status_code} {r.text[:300]}")
                a = r.json()
                tokens += a["usage"]["completion_tokens"]
                status = (a["verinet"].get("check") or {}).get("status", "none")
                checks[status] = checks.get(status, 0) + 1
                done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    return {"tok_s": tokens / wall, "calls_s": done / wall, "tokens": tokens, "calls": done, "wall_s": wall, "checks": checks}


def run(mode: str, args) -> dict:
    with tempfile.TemporaryDirectory() as d:
        s = start(Path(d), mode, args.sample_rate)
        try:
            # warm: the model loads on the first call
            asyncio.run(load(s.port, mode, 2, 1, 4, args.scheme))
            r = asyncio.run(load(s.port, mode, args.calls, args.concurrency, args.max_tokens, args.scheme))
        finally:
            s.stop()
    print(f"{mode}: {json.dumps(r)}", flush=True)
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--calls", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--sample-rate", type=float, default=0.1)
    ap.add_argument("--scheme", choices=["upto", "exact"], default="upto")
    args = ap.parse_args()
    if not Path(VERINET_BIN).exists():
        sys.exit(f"{VERINET_BIN} is missing: cargo build --release -p verinet")
    modes = ["free", "paid", "sampled"]
    ratios: dict[str, list[float]] = {"paid": [], "sampled": []}
    for rep in range(args.reps):
        order = modes[rep % 3:] + modes[:rep % 3]
        res = {m: run(m, args) for m in order}
        for m in ratios:
            ratios[m].append(res[m]["tok_s"] / res["free"]["tok_s"])
        print(f"rep {rep + 1} ({','.join(order)}): free {res['free']['tok_s']:.1f} tok/s, paid {res['paid']['tok_s']:.1f} "
              f"({ratios['paid'][-1]:.2f}), paid+sampled {res['sampled']['tok_s']:.1f} ({ratios['sampled'][-1]:.2f}); "
              f"checks {res['sampled']['checks']}", flush=True)
    import statistics
    print(json.dumps({"ratios": ratios, "median": {m: statistics.median(v) for m, v in ratios.items()}, "args": vars(args)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
