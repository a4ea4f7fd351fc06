#!/usr/bin/env python3
"""Pay a verinet node with the OFFICIAL PyPI `x402` client, unchanged.

verinet's automated tests use this script to prove that the official x402
Python client (protocol x402 version 2, scheme `exact`, EVM, EIP-3009
TransferWithAuthorization) pays a verinet node without any modification:
the request, the 402 parsing, the signing, the retry with PAYMENT-SIGNATURE
and the PAYMENT-RESPONSE decoding are all done by the `x402` package itself
(its documented httpx integration, `x402HttpxClient`); this file only wires
it up and prints what happened.

Usage (after `pip install x402 eth_account httpx`):

    python3 scripts/x402_pay.py --url URL --key 0xPRIVKEY --json '{...}'

POSTs the JSON body to URL. On a 402 the official client picks an accepted
requirement, signs it and retries once. Prints one JSON object to stdout:

    {"status": <final HTTP status>,
     "body": <response JSON, or text>,
     "payment_response": <decoded PAYMENT-RESPONSE header JSON, or null>,
     "payment_response_error": <why x402's own SettleResponse parser
                                rejected that header, or null>,
     "paid": <true if the client created a payment payload>,
     "scheme": <the scheme of the payment the client created, or null>}

Exit status: 0 if any HTTP response was received, 2 otherwise (the error is
printed as {"status": null, "error": "..."}).

Schemes: `--scheme exact` (the default) registers only the `exact` scheme, so
the client pays the `exact` offer; `--scheme upto` registers only the `upto`
scheme (Permit2 witness, the package's `UptoEvmScheme`), so the client signs
the authorised maximum and the server charges what the call used; `--scheme
both` registers both and lets the client take the first offer it supports.

Spend controls: by default the official client only pays "default" assets it
knows (USDC on public chains etc.) with a $1 cap. A verinet test chain
(e.g. eip155:31337) uses its own token, so this script opts in to any asset
(`allowed_assets: True`, a documented x402 setting); `--max-atomic N` adds
the package's `max_amount(N)` policy to refuse requirements above N atomic
units.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from typing import Any


def _decode_payment_response(value: str | None) -> tuple[Any, str | None]:
    """Raw JSON of a PAYMENT-RESPONSE header plus x402's own verdict on it."""
    if not value:
        return None, None
    try:
        raw = json.loads(base64.b64decode(value).decode("utf-8"))
    except Exception as exc:  # noqa: BLE001 - report, do not crash
        return value, f"not base64 JSON: {exc}"
    from x402.http.utils import decode_payment_response_header

    try:
        decode_payment_response_header(value)
    except Exception as exc:  # noqa: BLE001
        return raw, f"x402 SettleResponse rejected it: {exc}"
    return raw, None


async def _run(args: argparse.Namespace) -> int:
    from eth_account import Account
    from x402 import max_amount, x402Client
    from x402.http.clients.httpx import x402HttpxClient
    from x402.mechanisms.evm.exact import ExactEvmScheme
    from x402.mechanisms.evm.signers import EthAccountSigner
    from x402.mechanisms.evm.upto import UptoEvmScheme

    body = json.loads(args.json)
    signer = EthAccountSigner(Account.from_key(args.key))

    client = x402Client()
    if args.scheme in ("upto", "both"):
        client.register("eip155:*", UptoEvmScheme(signer))
    if args.scheme in ("exact", "both"):
        client.register("eip155:*", ExactEvmScheme(signer=signer))
    client.set_spend_controls({"allowed_assets": True})
    if args.max_atomic is not None:
        client.register_policy(max_amount(args.max_atomic))

    paid = False
    scheme = None

    def _after(ctx: Any) -> None:
        nonlocal paid, scheme
        paid = True
        accepted = getattr(getattr(ctx, "payment_payload", None), "accepted", None)
        scheme = getattr(accepted, "scheme", None)

    client.on_after_payment_creation(_after)

    try:
        async with x402HttpxClient(client, timeout=args.timeout) as http:
            response = await http.post(args.url, json=body)
    except Exception as exc:  # noqa: BLE001 - no HTTP response at all
        print(json.dumps({"status": None, "error": f"{type(exc).__name__}: {exc}", "paid": paid}))
        return 2

    try:
        parsed: Any = response.json()
    except ValueError:
        parsed = response.text
    payment_response, payment_response_error = _decode_payment_response(
        response.headers.get("PAYMENT-RESPONSE")
    )
    print(
        json.dumps(
            {
                "status": response.status_code,
                "body": parsed,
                "payment_response": payment_response,
                "payment_response_error": payment_response_error,
                "paid": paid,
                "scheme": scheme,
            }
        )
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="URL to POST to")
    parser.add_argument("--key", required=True, help="payer private key, 0x-hex")
    parser.add_argument("--json", required=True, help="JSON request body")
    parser.add_argument("--max-atomic", type=int, default=None,
                        help="refuse requirements whose amount exceeds this (atomic units)")
    parser.add_argument("--timeout", type=float, default=60.0, help="HTTP timeout, seconds")
    parser.add_argument("--scheme", choices=["exact", "upto", "both"], default="exact",
                        help="which x402 schemes the client registers")
    return asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
