"""numpy arrays to and from the node's tensor JSON, and the canonical tensor hash that receipts
bind (docs/api.md "Tensors", docs/receipts.md "Canonical tensor hash")."""

from __future__ import annotations

import base64
import struct
from typing import Any, Dict, Mapping

import numpy as np
from eth_utils import keccak

# The node's dtype names, their numpy types and ONNX TensorProto.DataType codes.
DTYPES: Dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "float16": np.dtype("<f2"),
    "int8": np.dtype("i1"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
    "uint8": np.dtype("u1"),
    "uint16": np.dtype("<u2"),
    "uint32": np.dtype("<u4"),
    "uint64": np.dtype("<u8"),
    "bool": np.dtype("?"),
}

ONNX_CODES: Dict[str, int] = {
    "float32": 1,
    "uint8": 2,
    "int8": 3,
    "uint16": 4,
    "int16": 5,
    "int32": 6,
    "int64": 7,
    "bool": 9,
    "float16": 10,
    "float64": 11,
    "uint32": 12,
    "uint64": 13,
}


def dtype_name(dt: np.dtype) -> str:
    """The node's name of a numpy dtype."""
    dt = np.dtype(dt)
    for name, d in DTYPES.items():
        if d.kind == dt.kind and d.itemsize == dt.itemsize:
            return name
    raise TypeError(f"numpy dtype {dt} has no verinet tensor type (supported: {', '.join(DTYPES)})")


def as_array(value: Any) -> np.ndarray:
    """A C-ordered, little-endian numpy array of a supported dtype from an array, a scalar, a
    nested list or an explicit tensor dict (``{"dtype","shape","data"|"b64"}``)."""
    if isinstance(value, Mapping):
        return from_json(value)
    arr = np.asarray(value)
    name = dtype_name(arr.dtype)
    return np.ascontiguousarray(arr, dtype=DTYPES[name])


def to_json(arr: np.ndarray) -> Dict[str, Any]:
    """The node's explicit tensor form. ``data`` (flat, row-major) for finite values, as the API
    documents; float tensors holding NaN or infinity go as ``b64`` (the exact bytes), since
    JSON cannot spell infinity and ``null`` would not keep a NaN's bits, so the inputs the node
    hashes are exactly the array given."""
    arr = as_array(arr)
    name = dtype_name(arr.dtype)
    shape = [int(d) for d in arr.shape]
    if arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
        return {"dtype": name, "shape": shape, "b64": base64.b64encode(arr.tobytes()).decode("ascii")}
    return {"dtype": name, "shape": shape, "data": arr.ravel().tolist()}


def _flatten(data: Any, out: list) -> None:
    if isinstance(data, list):
        for v in data:
            _flatten(v, out)
    else:
        out.append(data)


def from_json(t: Mapping[str, Any]) -> np.ndarray:
    """A numpy array from the node's tensor JSON (``data`` flat or nested, or ``b64``). Element
    values are converted as the node converts them, so the array's bytes are the ones it hashed:
    ``null`` is NaN, a float32 is its JSON number rounded to float32."""
    try:
        name = t["dtype"]
        shape = tuple(int(d) for d in t["shape"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"not a tensor (needs dtype and shape): {e}") from None
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}")
    dt = DTYPES[name]
    if "b64" in t and t["b64"] is not None:
        raw = base64.b64decode(t["b64"])
        arr = np.frombuffer(raw, dtype=dt).copy()
    else:
        flat: list = []
        _flatten(t.get("data", []), flat)
        if dt.kind == "f":
            vals = [float("nan") if v is None else v for v in flat]
            arr = np.array(vals, dtype=np.float64).astype(dt) if vals else np.zeros(0, dt)
        elif dt.kind == "b":
            arr = np.array([bool(v) for v in flat], dtype=dt)
        else:
            arr = np.array([int(v) for v in flat], dtype=dt) if flat else np.zeros(0, dt)
    count = int(np.prod(shape)) if shape else 1
    if arr.size != count:
        raise ValueError(f"{name} tensor of shape {list(shape)} has {arr.size} elements, needs {count}")
    return arr.reshape(shape)


def tensors_hash(tensors: Mapping[str, Any]) -> bytes:
    """Canonical keccak256 of named tensors (docs/receipts.md): sorted by name (UTF-8 bytes),
    each ``name | 0x00 | dtype code | rank u32 LE | dims u64 LE | byte length u64 LE | data``.
    Values may be numpy arrays or tensor JSON."""
    buf = bytearray()
    items = sorted(((k, as_array(v)) for k, v in tensors.items()), key=lambda kv: kv[0].encode("utf-8"))
    for name, arr in items:
        dname = dtype_name(arr.dtype)
        data = np.ascontiguousarray(arr, dtype=DTYPES[dname]).tobytes()
        buf += name.encode("utf-8") + b"\x00" + bytes([ONNX_CODES[dname]])
        buf += struct.pack("<I", arr.ndim)
        for d in arr.shape:
            buf += struct.pack("<Q", int(d))
        buf += struct.pack("<Q", len(data)) + data
    return keccak(bytes(buf))
