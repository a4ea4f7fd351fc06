#!/usr/bin/env python3
"""The Python baseline of scripts/bench_vs_python.py: what a careful Python user would serve an
ONNX model with. FastAPI + uvicorn (one worker process; uvloop + httptools from
uvicorn[standard]), one onnxruntime InferenceSession per model, created once at start with
intra_op_num_threads=1 and inter_op_num_threads=1, JSON in and out with orjson (numpy arrays
serialised directly, no .tolist()).

    target/pyenv/bin/python scripts/bench_vs_python_server.py --port 8090 \
        --model digits=models/digits-mlp.onnx --model minilm-int8=target/test-models/minilm/model.onnx

POST /v1/infer takes the body verinet's node takes, {"model": NAME, "inputs": {NAME: {"dtype",
"shape", "data" | "b64"}}} (other fields are ignored), and answers {"model": NAME, "outputs":
{NAME: {"dtype", "shape", "data"}}}. GET /health answers {"status": "ok"}.

--max-concurrency N decides how many session.run calls may overlap, to match the node's
`[runtime] max_concurrency`: with 1 the call runs inline on the event loop (no thread hop, the
fastest way to run one at a time); with N > 1 it runs in a worker thread behind an
anyio.CapacityLimiter(N) (onnxruntime releases the GIL while it computes, so N calls overlap).

Versions used (target/pyenv): fastapi 0.165.0, starlette 1.10.0, uvicorn[standard] 0.55.0
(uvloop 0.23.0, httptools 0.9.0), orjson 3.13.0, onnxruntime 1.32.0, numpy 2.4.6.
"""

from __future__ import annotations

import argparse
import base64

import anyio
import numpy as np
import onnxruntime as ort
import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

DTYPES = {
    "float32": np.float32, "float64": np.float64, "float16": np.float16,
    "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
    "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64, "bool": np.bool_,
}


def load_session(path: str) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def to_array(t: dict) -> np.ndarray:
    dtype = DTYPES[t["dtype"]]
    shape = t["shape"]
    if "b64" in t:
        return np.frombuffer(base64.b64decode(t["b64"]), dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(shape)
    return np.asarray(t["data"], dtype=dtype).reshape(shape)


def error(status: int, code: str, message: str) -> Response:
    return Response(orjson.dumps({"error": {"code": code, "message": message}}), status_code=status, media_type="application/json")


def make_app(models: dict[str, str], max_concurrency: int) -> FastAPI:
    sessions = {name: load_session(path) for name, path in models.items()}
    output_names = {name: [o.name for o in s.get_outputs()] for name, s in sessions.items()}
    input_names = {name: [i.name for i in s.get_inputs()] for name, s in sessions.items()}
    limiter = anyio.CapacityLimiter(max_concurrency) if max_concurrency > 1 else None
    app = FastAPI()

    @app.get("/health")
    async def health() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.post("/v1/infer")
    async def infer(request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
            name = body["model"]
            session = sessions.get(name)
            if session is None:
                return error(404, "not_found", f"unknown model {name!r}")
            inputs = body["inputs"]
            feeds = {n: to_array(inputs[n]) for n in input_names[name]}
        except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as e:
            return error(400, "invalid_json", f"{type(e).__name__}: {e}")
        try:
            if limiter is None:
                outs = session.run(output_names[name], feeds)
            else:
                outs = await anyio.to_thread.run_sync(session.run, output_names[name], feeds, limiter=limiter)
        except Exception as e:  # onnxruntime raises its own exception types
            return error(422, "execution_failed", str(e))
        outputs = {
            n: {"dtype": str(a.dtype), "shape": list(a.shape), "data": np.ascontiguousarray(a).reshape(-1)}
            for n, a in zip(output_names[name], outs)
        }
        return Response(orjson.dumps({"model": name, "outputs": outputs}, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--model", action="append", required=True, help="NAME=PATH.onnx (repeatable)")
    ap.add_argument("--max-concurrency", type=int, default=1)
    a = ap.parse_args()
    models = dict(m.split("=", 1) for m in a.model)
    app = make_app(models, a.max_concurrency)
    uvicorn.run(app, host=a.host, port=a.port, workers=1, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
