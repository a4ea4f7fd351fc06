"""EIP-712 typed data of verinet's messages (receipts, receipt batches, spending sessions, x402's
EIP-3009 transfer authorizations), their digests, and signer recovery."""

from __future__ import annotations

from typing import Any, Dict, Optional

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_keys import keys
from eth_utils import keccak, to_checksum_address

EIP712_DOMAIN_VERINET = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
]

RECEIPT_TYPE = [
    {"name": "requestId", "type": "string"},
    {"name": "modelHash", "type": "bytes32"},
    {"name": "inputHash", "type": "bytes32"},
    {"name": "outputHash", "type": "bytes32"},
    {"name": "node", "type": "address"},
    {"name": "mode", "type": "string"},
    {"name": "price", "type": "uint256"},
    {"name": "payer", "type": "address"},
    {"name": "timestamp", "type": "uint64"},
]

RECEIPT_BATCH_TYPE = [
    {"name": "root", "type": "bytes32"},
    {"name": "size", "type": "uint256"},
    {"name": "timestamp", "type": "uint64"},
]

SPENDING_SESSION_TYPE = [
    {"name": "payer", "type": "address"},
    {"name": "maxTotal", "type": "uint256"},
    {"name": "expiry", "type": "uint256"},
    {"name": "models", "type": "string"},
    {"name": "nonce", "type": "bytes32"},
]

TRANSFER_WITH_AUTHORIZATION_TYPE = [
    {"name": "from", "type": "address"},
    {"name": "to", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "validAfter", "type": "uint256"},
    {"name": "validBefore", "type": "uint256"},
    {"name": "nonce", "type": "bytes32"},
]


def hex_bytes(value: str, length: Optional[int] = None) -> bytes:
    """``0x`` hex (or bare hex) to bytes, checking the length when given."""
    if not isinstance(value, str):
        raise ValueError(f"expected hex text, got {type(value).__name__}")
    h = value[2:] if value[:2] in ("0x", "0X") else value
    b = bytes.fromhex(h)
    if length is not None and len(b) != length:
        raise ValueError(f"expected {length} bytes of hex, got {len(b)}")
    return b


def to_hex(b: bytes) -> str:
    return "0x" + bytes(b).hex()


def verinet_domain(chain_id: int) -> Dict[str, Any]:
    return {"name": "verinet", "version": "1", "chainId": int(chain_id)}


def receipt_typed_data(signed: Dict[str, Any]) -> Dict[str, Any]:
    """The EIP-712 typed data of a signed receipt's ``receipt`` body (docs/receipts.md)."""
    r = signed["receipt"]
    return {
        "types": {"EIP712Domain": EIP712_DOMAIN_VERINET, "Receipt": RECEIPT_TYPE},
        "primaryType": "Receipt",
        "domain": verinet_domain(signed["chain_id"]),
        "message": {
            "requestId": r["request_id"],
            "modelHash": hex_bytes(r["model_hash"], 32),
            "inputHash": hex_bytes(r["input_hash"], 32),
            "outputHash": hex_bytes(r["output_hash"], 32),
            "node": to_checksum_address(r["node"]),
            "mode": r["mode"],
            "price": int(r["price"]),
            "payer": to_checksum_address(r["payer"]),
            "timestamp": int(r["timestamp"]),
        },
    }


def batch_typed_data(root: str, size: int, timestamp: int, chain_id: int) -> Dict[str, Any]:
    """``ReceiptBatch(bytes32 root,uint256 size,uint64 timestamp)`` in the receipt domain."""
    return {
        "types": {"EIP712Domain": EIP712_DOMAIN_VERINET, "ReceiptBatch": RECEIPT_BATCH_TYPE},
        "primaryType": "ReceiptBatch",
        "domain": verinet_domain(chain_id),
        "message": {"root": hex_bytes(root, 32), "size": int(size), "timestamp": int(timestamp)},
    }


def session_typed_data(
    payer: str, max_total: int, expiry: int, models: list, nonce: bytes, chain_id: int
) -> Dict[str, Any]:
    """``SpendingSession(address payer,uint256 maxTotal,uint256 expiry,string models,bytes32
    nonce)`` in the domain ``{name: "verinet", version: "1", chainId}``; ``models`` is signed
    as the names joined by ``,`` (the request body carries them as a JSON array)."""
    return {
        "types": {"EIP712Domain": EIP712_DOMAIN_VERINET, "SpendingSession": SPENDING_SESSION_TYPE},
        "primaryType": "SpendingSession",
        "domain": verinet_domain(chain_id),
        "message": {
            "payer": to_checksum_address(payer),
            "maxTotal": int(max_total),
            "expiry": int(expiry),
            "models": ",".join(models),
            "nonce": bytes(nonce),
        },
    }


def transfer_typed_data(
    *, name: str, version: str, chain_id: int, asset: str, authorization: Dict[str, str]
) -> Dict[str, Any]:
    """EIP-3009 ``TransferWithAuthorization`` in the token's domain ``{name, version, chainId,
    verifyingContract: asset}`` (x402 ``exact`` on EVM)."""
    a = authorization
    return {
        "types": {
            "EIP712Domain": EIP712_DOMAIN_VERINET + [{"name": "verifyingContract", "type": "address"}],
            "TransferWithAuthorization": TRANSFER_WITH_AUTHORIZATION_TYPE,
        },
        "primaryType": "TransferWithAuthorization",
        "domain": {
            "name": name,
            "version": version,
            "chainId": int(chain_id),
            "verifyingContract": to_checksum_address(asset),
        },
        "message": {
            "from": to_checksum_address(a["from"]),
            "to": to_checksum_address(a["to"]),
            "value": int(a["value"]),
            "validAfter": int(a["validAfter"]),
            "validBefore": int(a["validBefore"]),
            "nonce": hex_bytes(a["nonce"], 32),
        },
    }


def digest(typed: Dict[str, Any]) -> bytes:
    """The EIP-712 signing hash: keccak256(0x19 0x01 ‖ domainSeparator ‖ hashStruct(message))."""
    m: SignableMessage = encode_typed_data(full_message=typed)
    return keccak(b"\x19" + m.version + m.header + m.body)


def recover(digest32: bytes, signature: str) -> str:
    """The checksummed address that signed ``digest32`` (65-byte ``r‖s‖v``, v 27/28 or 0/1)."""
    sig = hex_bytes(signature, 65)
    v = sig[64]
    if v >= 27:
        v -= 27
    if v not in (0, 1):
        raise ValueError(f"signature recovery id {sig[64]} is not 0/1/27/28")
    s = keys.Signature(signature_bytes=sig[:64] + bytes([v]))
    return s.recover_public_key_from_msg_hash(digest32).to_checksum_address()


def sign_typed(wallet: Any, typed: Dict[str, Any]) -> str:
    """Signs typed data with an eth_account ``LocalAccount`` (``sign_typed_data``), ``0x`` hex."""
    signed = wallet.sign_typed_data(full_message=typed)
    return to_hex(signed.signature)


def load_wallet(wallet: Any) -> Any:
    """A ``LocalAccount`` from a key (``0x`` hex or bytes), or the account as given."""
    if wallet is None:
        return None
    if isinstance(wallet, (str, bytes)):
        return Account.from_key(wallet)
    if not hasattr(wallet, "address") or not hasattr(wallet, "sign_typed_data"):
        raise TypeError("wallet must be an eth_account LocalAccount or a private key")
    return wallet
