"""What the SDK computes on its own: the documented hash vector, amounts, tensor JSON, error
classes. (The node-facing behaviour is in test_node.py.)"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

import verinet
from verinet.errors import error_class
from verinet.tensors import from_json, tensors_hash, to_json


def test_canonical_hash_matches_the_documented_vector():
    # docs/receipts.md: one tensor x, float32, shape [1, 2], data [1.0, 2.0].
    h = tensors_hash({"x": np.array([[1.0, 2.0]], dtype=np.float32)})
    assert "0x" + h.hex() == "0x48a5a882dd73f5d1ae3054f3da2a9d0b97222f056abe34c4d498e56f79780cf2"
    # The JSON forms hash alike, and names are sorted by their bytes.
    assert tensors_hash({"x": {"dtype": "float32", "shape": [1, 2], "data": [[1, 2]]}}) == h
    a = {"b": np.array([1], np.int64), "a": np.array([True, False])}
    assert tensors_hash(a) == tensors_hash(dict(reversed(list(a.items()))))


def test_amounts_are_token_units_in_and_base_units_out():
    assert verinet.to_base_units("0.001") == 10**15
    assert verinet.to_base_units(Decimal("1.5")) == 15 * 10**17
    assert verinet.to_base_units(2) == 2 * 10**18
    assert verinet.to_base_units(0.001) == 10**15
    assert verinet.to_base_units("1.5 VRN") == 15 * 10**17
    assert verinet.to_base_units(verinet.BaseUnits(1430)) == 1430
    assert verinet.to_base_units("0.5", decimals=6) == 500_000
    assert verinet.format_amount(1430) == "0.00000000000000143 VRN"
    assert verinet.format_amount("1000000000000000000000") == "1000 VRN"
    assert verinet.format_amount(15 * 10**17, symbol="USD") == "1.5 USD"
    for bad in ("-1", "abc", "1e-19", "0.0000000000000000001"):
        with pytest.raises(ValueError):
            verinet.to_base_units(bad)
    with pytest.raises(TypeError):
        verinet.to_base_units(True)


def test_tensor_json_round_trips_every_dtype():
    for name, dt in verinet.tensors.DTYPES.items():
        arr = (np.arange(6) % 2 == 1) if name == "bool" else np.arange(6).astype(dt)
        arr = arr.reshape(2, 3)
        t = to_json(arr)
        assert t["dtype"] == name and t["shape"] == [2, 3] and "data" in t
        back = from_json(t)
        assert back.dtype == verinet.tensors.DTYPES[name] and np.array_equal(back, arr)
    # Non-finite floats go as exact bytes; null reads as NaN.
    t = to_json(np.array([1.0, np.inf, np.nan], np.float32))
    assert "b64" in t and np.array_equal(from_json(t), np.array([1.0, np.inf, np.nan], np.float32), equal_nan=True)
    assert np.isnan(from_json({"dtype": "float64", "shape": [1], "data": [None]})[0])
    with pytest.raises(TypeError):
        to_json(np.array(["text"]))


def test_error_classes_follow_the_code_then_the_status():
    assert error_class(404, "not_found") is verinet.NotFound
    assert error_class(404, "receipt_pending") is verinet.ReceiptPending
    assert error_class(422, "input_mismatch") is verinet.InvalidInput
    assert error_class(402, "insufficient_funds") is verinet.InsufficientFunds
    assert error_class(402, "nonce_used") is verinet.PaymentRequired
    assert error_class(409, "nonce_used") is verinet.Conflict
    assert error_class(401, "session_invalid") is verinet.SessionInvalid
    assert issubclass(verinet.SessionInvalid, verinet.PaymentRequired)
    assert error_class(503, "whatever") is verinet.Unavailable
    assert error_class(500, "internal") is verinet.ServerError
    assert issubclass(verinet.SpendLimitExceeded, verinet.PaymentRequired)
