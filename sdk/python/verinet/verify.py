"""Offline checks: a result's receipt (hashes recomputed from the tensors, EIP-712 digest
recomputed, signer recovered) and a receipt's Merkle inclusion proof against its node-signed
batch root (OpenZeppelin StandardMerkleTree). No node is needed for either."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from . import crypto
from .errors import VerificationFailed
from .tensors import tensors_hash

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


@dataclass
class Check:
    """One comparison: its name, whether it held, and what was compared."""

    name: str
    ok: bool
    detail: str

    def __str__(self) -> str:
        return f"{'✓' if self.ok else '✗'} {self.name}: {self.detail}"


@dataclass
class _Report:
    checks: List[Check] = field(default_factory=list)
    not_checked: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every check held (and there was at least one)."""
        return bool(self.checks) and all(c.ok for c in self.checks)

    def __bool__(self) -> bool:
        return self.ok

    @property
    def failed(self) -> List[Check]:
        return [c for c in self.checks if not c.ok]

    def check(self, name: str) -> Optional[Check]:
        """The check called ``name``, if it ran."""
        return next((c for c in self.checks if c.name == name), None)

    def _add(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append(Check(name, bool(ok), detail))
        return bool(ok)

    def raise_if_failed(self) -> "_Report":
        """Raises :class:`VerificationFailed` naming the failed checks; returns self if all held."""
        if not self.ok:
            names = ", ".join(str(c) for c in self.failed) or "nothing was checked"
            raise VerificationFailed(f"verification failed: {names}", self)
        return self

    def __str__(self) -> str:
        lines = [str(c) for c in self.checks]
        lines += [f"- not checked: {n}" for n in self.not_checked]
        return "\n".join(lines)


@dataclass
class VerifyResult(_Report):
    """What :func:`verify` found. ``ok`` is true when every check held; ``signer`` is the
    recovered address (``None`` if the signature did not recover)."""

    signer: Optional[str] = None
    request_id: Optional[str] = None
    digest: Optional[str] = None


@dataclass
class ProofResult(_Report):
    """What :func:`verify_proof` found; ``proof`` is the proof body it checked, ``batch_signer``
    the address recovered from the batch signature."""

    proof: Dict[str, Any] = field(default_factory=dict)
    batch_signer: Optional[str] = None

    @property
    def root(self) -> Optional[str]:
        return (self.proof.get("batch") or {}).get("root")

    @property
    def batch(self) -> Dict[str, Any]:
        return self.proof.get("batch") or {}


def _hex32(b: bytes) -> str:
    return crypto.to_hex(b)


def _same_hex(a: Any, b: Any) -> bool:
    return isinstance(a, str) and isinstance(b, str) and a.lower() == b.lower()


def _check_tensors_hash(res: "VerifyResult", name: str, tensors: Mapping, signed: Any, unreadable: str) -> None:
    """Recomputes the canonical hash of ``tensors`` and records whether it is the ``signed`` one."""
    try:
        got = _hex32(tensors_hash(tensors))
        res._add(name, _same_hex(got, signed), f"recomputed {got}, signed {signed}")
    except Exception as e:  # noqa: BLE001
        res._add(name, False, f"{unreadable}: {e}")


def _same_address(a: Any, b: Any) -> bool:
    try:
        return to_checksum_address(a) == to_checksum_address(b)
    except (TypeError, ValueError):
        return False


def _as_response(obj: Any) -> Dict[str, Any]:
    """A response or receipt as a JSON dict (an InferResult, a dict, JSON text or a file path)."""
    raw = getattr(obj, "raw", None)
    if isinstance(raw, Mapping):
        return dict(raw)
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, (bytes, str)):
        text = obj.decode() if isinstance(obj, bytes) else obj
        if text.lstrip().startswith("{"):
            return json.loads(text)
        with open(text, encoding="utf-8") as f:
            return json.load(f)
    raise TypeError("verify() takes an InferResult, a response or receipt dict, JSON text or a file path")


def verify(
    response_or_receipt: Any,
    expected_signer: Optional[str] = None,
    *,
    inputs: Optional[Mapping[str, Any]] = None,
    strict: bool = False,
) -> VerifyResult:
    """Checks a result offline, with no node.

    ``response_or_receipt``: an :class:`~verinet.InferResult`, a ``/v1/infer`` response as a
    dict (or its JSON text, or a path to a saved one), or a signed receipt alone
    (``{"receipt", "chain_id", "digest", "signature"}``).

    Checks: the EIP-712 digest recomputed from the receipt's fields equals ``digest``; the
    signature recovers the receipt's ``node`` (and ``expected_signer`` if given); for a
    response also the request id, the model sha256 (``modelHash``), the canonical output
    hash recomputed from the outputs, the canonical input hash when the inputs are known (an
    InferResult keeps what it sent; else pass ``inputs``), the price and payer against
    ``price``/``payment``, and the mode against ``verification``.

    Returns a :class:`VerifyResult` (``.ok``, ``.signer``, ``.checks``); with ``strict=True``
    a failed check raises :class:`~verinet.VerificationFailed` instead.
    """
    res = VerifyResult()
    doc = _as_response(response_or_receipt)
    is_response = "outputs" in doc or "request_id" in doc and "receipt" in doc and "signature" not in doc
    signed = doc.get("receipt") if is_response else doc
    if not isinstance(signed, Mapping) or not isinstance(signed.get("receipt"), Mapping):
        res._add("receipt", False, "no signed receipt found")
        return res.raise_if_failed() if strict else res
    body = signed["receipt"]
    if body.get("completion") is not None:
        raise ValueError("a completion (language model) receipt: verify() checks tensor receipts only")
    res.request_id = body.get("request_id")

    # 1. The digest is the EIP-712 hash of exactly these fields.
    try:
        dig = crypto.digest(crypto.receipt_typed_data(signed))
    except Exception as e:  # noqa: BLE001 - a malformed receipt is a failed check
        res._add("digest", False, f"receipt fields do not encode: {e}")
        return res.raise_if_failed() if strict else res
    res.digest = _hex32(dig)
    res._add(
        "digest",
        _same_hex(res.digest, signed.get("digest")),
        f"EIP-712 hash of the fields {res.digest}, receipt says {signed.get('digest')}",
    )

    # 2. The signature recovers the node that states it.
    try:
        res.signer = crypto.recover(dig, signed.get("signature", ""))
        res._add("signature", _same_address(res.signer, body.get("node")), f"recovered {res.signer}, receipt node {body.get('node')}")
    except Exception as e:  # noqa: BLE001
        res._add("signature", False, f"does not recover: {e}")
    if expected_signer is not None:
        res._add(
            "expected_signer",
            res.signer is not None and _same_address(res.signer, expected_signer),
            f"recovered {res.signer}, expected {expected_signer}",
        )

    if not is_response:
        res.not_checked += ["output_hash (no outputs given)", "input_hash (no inputs given)"]
        return res.raise_if_failed() if strict else res

    # 3. It is the receipt of this response.
    res._add("request_id", body.get("request_id") == doc.get("request_id"), f"receipt {body.get('request_id')}, response {doc.get('request_id')}")
    sha = (doc.get("model") or {}).get("sha256", "")
    want = "0x" + sha.split(":", 1)[1] if isinstance(sha, str) and sha.startswith("sha256:") else None
    res._add("model_hash", want is not None and _same_hex(want, body.get("model_hash")), f"receipt {body.get('model_hash')}, response model {sha or '?'}")

    # 4. The outputs are the ones signed (an InferResult: the numpy arrays it holds).
    outputs = getattr(response_or_receipt, "outputs", None)
    if not isinstance(outputs, Mapping) or not outputs:
        outputs = doc.get("outputs")
    if isinstance(outputs, Mapping):
        _check_tensors_hash(res, "output_hash", outputs, body.get("output_hash"), "outputs do not decode")
    else:
        res._add("output_hash", False, "the response has no outputs")

    if inputs is None:
        inputs = getattr(response_or_receipt, "inputs", None)
    if isinstance(inputs, Mapping) and inputs:
        _check_tensors_hash(res, "input_hash", inputs, body.get("input_hash"), "inputs do not encode")
    else:
        res.not_checked.append("input_hash (the response does not carry its inputs; pass inputs=)")

    # 5. The terms: price, payer and mode.
    if doc.get("price") is not None:
        res._add("price", str(doc.get("price")) == str(body.get("price")), f"receipt {body.get('price')}, response {doc.get('price')}")
    payment = doc.get("payment")
    if isinstance(payment, Mapping):
        res._add("payer", _same_address(payment.get("payer"), body.get("payer")), f"receipt {body.get('payer')}, payment by {payment.get('payer')}")
    elif doc.get("price") is not None and str(doc.get("price")) == "0":
        res._add("payer", _same_address(body.get("payer"), ZERO_ADDRESS), f"free call, receipt payer {body.get('payer')}")
    check = doc.get("check") or {}
    if doc.get("verification") and check.get("status") != "disputed":
        res._add("mode", body.get("mode") == doc.get("verification"), f"receipt {body.get('mode')}, response {doc.get('verification')}")
    res.not_checked.append("that the outputs are what the model computes (a validator's re-execution: verification=\"sampled\"/\"quorum\")")
    return res.raise_if_failed() if strict else res


def _leaf_values(encoding: List[str], values: List[Any]) -> List[Any]:
    out = []
    for t, v in zip(encoding, values):
        if t.startswith("bytes") and t != "bytes" and isinstance(v, str):
            out.append(crypto.hex_bytes(v))
        elif t.startswith(("uint", "int")):
            out.append(int(v))
        else:
            out.append(v)
    return out


def leaf_hash(encoding: List[str], values: List[Any]) -> bytes:
    """OpenZeppelin StandardMerkleTree leaf: keccak256(keccak256(abi.encode(types, values)))."""
    return keccak(keccak(abi_encode(list(encoding), _leaf_values(encoding, values))))


def process_proof(leaf: bytes, proof: List[str]) -> bytes:
    """OpenZeppelin ``processProof``: fold the siblings in with sorted-pair keccak256."""
    node = leaf
    for sibling in proof:
        s = crypto.hex_bytes(sibling, 32)
        a, b = (node, s) if node <= s else (s, node)
        node = keccak(a + b)
    return node


def verify_proof(
    proof: Mapping[str, Any],
    receipt: Any = None,
    expected_signer: Optional[str] = None,
    *,
    strict: bool = False,
) -> ProofResult:
    """Checks a ``GET /v1/receipts/{id}/proof`` body offline: the leaf is the StandardMerkleTree
    leaf of ``digest``, the proof leads from it to ``batch.root``, the batch signature
    (``ReceiptBatch(bytes32 root,uint256 size,uint64 timestamp)``) recovers ``batch.node``
    (and ``expected_signer`` if given). With ``receipt`` (a result, a response or a signed
    receipt) also that the proof is for that receipt: same request id, and the digest is the
    one its receipt carries and its fields hash to."""
    res = ProofResult(proof=dict(proof))
    encoding = list(proof.get("leaf_encoding") or [])
    digest = proof.get("digest")
    res._add("leaf_encoding", encoding == ["bytes32"], f"{encoding}")
    try:
        leaf = leaf_hash(encoding, [digest])
    except Exception as e:  # noqa: BLE001
        res._add("leaf", False, f"digest {digest!r} does not encode as {encoding}: {e}")
        return res.raise_if_failed() if strict else res
    res._add("leaf", _same_hex(_hex32(leaf), proof.get("leaf")), f"keccak256(keccak256(abi.encode(digest))) {_hex32(leaf)}, proof says {proof.get('leaf')}")
    batch = proof.get("batch") or {}
    try:
        root = process_proof(leaf, list(proof.get("proof") or []))
        res._add("root", _same_hex(_hex32(root), batch.get("root")), f"proof leads to {_hex32(root)}, batch root {batch.get('root')}")
    except Exception as e:  # noqa: BLE001
        res._add("root", False, f"proof does not decode: {e}")
    if batch.get("signature"):
        try:
            h = crypto.digest(crypto.batch_typed_data(batch["root"], batch["size"], batch["timestamp"], batch["chain_id"]))
            res.batch_signer = crypto.recover(h, batch["signature"])
            res._add("batch_signature", _same_address(res.batch_signer, batch.get("node")), f"recovered {res.batch_signer}, batch node {batch.get('node')}")
        except Exception as e:  # noqa: BLE001
            res._add("batch_signature", False, f"does not recover: {e}")
        if expected_signer is not None:
            res._add("expected_signer", res.batch_signer is not None and _same_address(res.batch_signer, expected_signer), f"batch signed by {res.batch_signer}, expected {expected_signer}")
    else:
        res.not_checked.append("batch signature (the proof has none)")
    if receipt is not None:
        doc = receipt if isinstance(receipt, Mapping) else _as_response(receipt)
        signed = doc.get("receipt") if isinstance(doc.get("receipt"), Mapping) and "signature" not in doc else doc
        rid = (signed.get("receipt") or {}).get("request_id")
        res._add("request_id", rid == proof.get("request_id"), f"receipt {rid}, proof {proof.get('request_id')}")
        res._add("digest", _same_hex(signed.get("digest"), digest), f"receipt digest {signed.get('digest')}, proof leaf value {digest}")
        try:
            fields = _hex32(crypto.digest(crypto.receipt_typed_data(signed)))
            res._add("receipt_fields", _same_hex(fields, digest), f"the receipt's fields hash to {fields}")
        except Exception as e:  # noqa: BLE001
            res._add("receipt_fields", False, f"receipt fields do not encode: {e}")
    return res.raise_if_failed() if strict else res
