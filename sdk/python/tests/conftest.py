"""Fixtures for the SDK tests. They run against a real node whose URL is VERINET_NODE_URL
(crates/node/tests/it/python_sdk.rs starts one and runs them); without it the run fails."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import numpy as np
import pytest
from eth_account import Account

import verinet

REPO = Path(__file__).resolve().parents[3]


def pytest_configure(config: pytest.Config) -> None:
    if not os.environ.get("VERINET_NODE_URL"):
        raise pytest.UsageError(
            "VERINET_NODE_URL is not set: the SDK tests run against a real node, e.g. "
            "`verinet up --listen 127.0.0.1:18480` then VERINET_NODE_URL=http://127.0.0.1:18480 "
            "(the Rust test crates/node/tests/it/python_sdk.rs starts a node and sets it)"
        )


@pytest.fixture(scope="session")
def node_url() -> str:
    return os.environ["VERINET_NODE_URL"]


def digits_copy(tag: str) -> bytes:
    """The bundled digits model with a doc_string appended (ONNX ModelProto field 6; the last
    value of a field wins, so it is the same model): bytes of our own, since a content hash has
    one owner (as crates/node/tests/it/helpers.rs `digits_bytes` does)."""
    data = (REPO / "models" / "digits-mlp.onnx").read_bytes()
    doc = f"verinet python sdk test copy {tag}".encode()
    assert len(doc) < 128, "one-byte varint length"
    return data + bytes([0x32, len(doc)]) + doc


class CountingWallet:
    """A real eth_account key that counts what it signs (to prove nothing was signed)."""

    def __init__(self, account):
        self._account = account
        self.signed = 0

    @property
    def address(self) -> str:
        return self._account.address

    def sign_typed_data(self, *args, **kw):
        self.signed += 1
        return self._account.sign_typed_data(*args, **kw)

    def sign_message(self, *args, **kw):
        self.signed += 1
        return self._account.sign_message(*args, **kw)


@pytest.fixture(scope="session")
def priced_model(node_url, tmp_path_factory):
    """A fresh copy of digits published under a fresh name at a royalty of 0.001 tokens."""
    creator = Account.create()
    client = verinet.Client(node_url, creator)
    name = f"sdk-digits-{secrets.token_hex(4)}"
    path = tmp_path_factory.mktemp("model") / "digits.onnx"
    path.write_bytes(digits_copy(name))
    info = client.publish(
        path, name, "1.0.0", price="0.001", description="digits, via the Python SDK", tags=["sdk", "digits"], license="MIT"
    )
    return {"name": name, "info": info, "creator": creator, "path": path, "client": client}


@pytest.fixture
def funded(node_url):
    """A fresh payer with 10 tokens from the faucet."""
    account = Account.create()
    verinet.Client(node_url).faucet("10", address=account.address)
    return account


@pytest.fixture(scope="session")
def sample() -> dict:
    doc = json.loads((REPO / "fixtures" / "digits" / "sample.json").read_text())
    t = doc["pixels"]
    return {"pixels": np.array(t["data"], dtype=np.float32).reshape(t["shape"])}


@pytest.fixture(scope="session")
def reference() -> dict:
    """Case 0 of fixtures/digits/reference.json (onnxruntime's outputs for the sample)."""
    doc = json.loads((REPO / "fixtures" / "digits" / "reference.json").read_text())
    case = doc["cases"][0]
    return {
        name: np.array(t["data"], dtype=verinet.tensors.DTYPES[t["dtype"]]).reshape(t["shape"])
        for name, t in case["outputs"].items()
    } | {"_inputs": case["inputs"]}
