#!/usr/bin/env bash
# Free digits calls at 8 in flight, binaries side by side (BENCHMARKS.md, issue 17).
#
#   scripts/bench_free_path.sh [--runs N] [--duration S] [--conns C] BINARY...
#
# Each binary in turn, N rounds (default 3), starts `verinet up --backend onnxruntime` on a fresh
# data dir with [runtime] max_concurrency = 2, waits for /health, drives POST /v1/infer with
# fixtures/digits/sample.json through scripts/bench_vs_python.lua (wrk -cC -t2, 3 s of warm-up,
# then S seconds, default 10), and prints one table row per run. BENCH_RUNTIME_EXTRA adds lines
# to [runtime] (e.g. 'inline_below_us = 0'). Needs wrk and
# ORT_DYLIB_PATH (or the onnxruntime wheel in target/pyenv).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=3 duration=10 conns=8
while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) runs=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --conns) conns=$2; shift 2 ;;
        *) break ;;
    esac
done
[[ $# -gt 0 ]] || { echo "usage: $0 [--runs N] [--duration S] [--conns C] BINARY..." >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk is missing (apt-get install -y wrk)" >&2; exit 1; }
if [[ -z "${ORT_DYLIB_PATH:-}" ]]; then
    ORT_DYLIB_PATH=$(ls "$PWD"/target/pyenv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so* | head -1)
    export ORT_DYLIB_PATH
fi
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
python3 -c 'import json,sys; print(json.dumps({"model":"digits","inputs":json.load(open(sys.argv[1]))}, separators=(",",":")))' \
    fixtures/digits/sample.json > "$work/body.json"
printf '[runtime]\nmax_concurrency = 2\n%b\n' "${BENCH_RUNTIME_EXTRA:-}" > "$work/node.toml"
export BENCH_BODY="$work/body.json"

echo "| binary | run | req/s | p50 ms | p99 ms |"
echo "|---|---|---|---|---|"
for run in $(seq 1 "$runs"); do
    for bin in "$@"; do
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
        rm -rf "$work/data"
        "$bin" up --listen "127.0.0.1:$port" --data-dir "$work/data" --backend onnxruntime \
            --config "$work/node.toml" > "$work/node.log" 2>&1 &
        pid=$!
        for _ in $(seq 1 600); do
            curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
            sleep 0.1
        done
        curl -sf "http://127.0.0.1:$port/health" >/dev/null || { tail -20 "$work/node.log" >&2; exit 1; }
        wrk -c"$conns" -t2 -d3s -s scripts/bench_vs_python.lua "http://127.0.0.1:$port/v1/infer" >/dev/null
        line=$(wrk -c"$conns" -t2 -d"${duration}s" --latency -s scripts/bench_vs_python.lua \
            "http://127.0.0.1:$port/v1/infer" | grep '^BENCH_JSON' | sed 's/^BENCH_JSON //')
        kill "$pid"; wait "$pid" 2>/dev/null || true
        python3 - "$bin" "$run" "$line" <<'EOF'
import json, sys
b, run, j = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
if j["status"] or j["connect"] or j["read"] or j["write"] or j["timeout"]:
    sys.exit(f"{b}: errors {j}")
rps = j["requests"] / (j["duration_us"] / 1e6)
print(f"| {b} | {run} | {rps:.0f} | {j['p50_us']/1e3:.3f} | {j['p99_us']/1e3:.2f} |")
EOF
    done
done
