"""x402 v2, scheme ``exact`` on EVM: the ``PAYMENT-REQUIRED`` / ``PAYMENT-SIGNATURE`` /
``PAYMENT-RESPONSE`` headers (standard padded base64 of compact JSON) and the EIP-3009
``TransferWithAuthorization`` a payer signs (docs/payments.md "x402 v2")."""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
from typing import Any, Dict, Optional

from . import crypto

PAYMENT_REQUIRED = "payment-required"
PAYMENT_SIGNATURE = "payment-signature"
PAYMENT_RESPONSE = "payment-response"


def encode_header(value: Any) -> str:
    return base64.b64encode(json.dumps(value, separators=(",", ":")).encode("utf-8")).decode("ascii")


def decode_header(value: str) -> Any:
    """Decodes a header's base64 JSON (padded or not, standard or URL-safe alphabet)."""
    v = value.strip()
    pad = "=" * (-len(v) % 4)
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            return json.loads(decode(v + pad).decode("utf-8"))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            continue
    raise ValueError("header is not base64 JSON")


def chain_id_of(network: str) -> int:
    if not isinstance(network, str) or not network.startswith("eip155:"):
        raise ValueError(f"network {network!r} is not eip155:<chainId>")
    return int(network.split(":", 1)[1])


def pick_exact(required: Dict[str, Any]) -> Dict[str, Any]:
    """The first ``exact`` requirement on an EVM network the 402 offers."""
    for req in required.get("accepts") or []:
        if req.get("scheme") == "exact" and str(req.get("network", "")).startswith("eip155:"):
            return req
    raise ValueError(f"the node offers no x402 'exact' EVM payment: {required.get('accepts')}")


def sign_payment(
    wallet: Any, accepted: Dict[str, Any], resource: Optional[Dict[str, Any]], now: Optional[int] = None
) -> Dict[str, Any]:
    """The x402 v2 payload paying ``accepted`` with ``wallet``: an EIP-3009 authorization from
    the wallet to ``payTo`` for exactly ``amount``, valid from 0 until now +
    ``maxTimeoutSeconds``, with a fresh random nonce; ``accepted`` and ``resource`` echoed, as
    the official x402 clients and verinet's Rust client do."""
    now = int(time.time()) if now is None else now
    extra = accepted.get("extra") or {}
    timeout = int(accepted.get("maxTimeoutSeconds") or 0) or 3600
    authorization = {
        "from": wallet.address,
        "to": accepted["payTo"],
        "value": str(int(accepted["amount"])),
        "validAfter": "0",
        "validBefore": str(now + timeout),
        "nonce": crypto.to_hex(os.urandom(32)),
    }
    typed = crypto.transfer_typed_data(
        name=str(extra.get("name", "")),
        version=str(extra.get("version", "1")),
        chain_id=chain_id_of(accepted["network"]),
        asset=accepted["asset"],
        authorization=authorization,
    )
    payload: Dict[str, Any] = {
        "x402Version": 2,
        "payload": {"signature": crypto.sign_typed(wallet, typed), "authorization": authorization},
        "accepted": accepted,
    }
    if resource is not None:
        payload["resource"] = resource
    return payload
