#!/usr/bin/env python3
"""Recover the signer of a verinet receipt with eth_account, independently of verinet's code.

Used by verinet's automated tests to prove any Ethereum library can check a receipt. Reads a
receipt JSON file (a SignedReceipt, or a whole /v1/infer response with a "receipt" field), builds
the EIP-712 typed data from docs/receipts.md and prints one JSON line:
{"signer": "0x...", "digest": "0x..."} (the recovered address and the EIP-712 hash).
"""

import json
import sys

from eth_account import Account
from eth_account.messages import encode_typed_data


def typed_data(signed):
    r = signed["receipt"]
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
            ],
            "Receipt": [
                {"name": "requestId", "type": "string"},
                {"name": "modelHash", "type": "bytes32"},
                {"name": "inputHash", "type": "bytes32"},
                {"name": "outputHash", "type": "bytes32"},
                {"name": "node", "type": "address"},
                {"name": "mode", "type": "string"},
                {"name": "price", "type": "uint256"},
                {"name": "payer", "type": "address"},
                {"name": "timestamp", "type": "uint64"},
            ],
        },
        "primaryType": "Receipt",
        "domain": {"name": "verinet", "version": "1", "chainId": signed["chain_id"]},
        "message": {
            "requestId": r["request_id"],
            "modelHash": bytes.fromhex(r["model_hash"][2:]),
            "inputHash": bytes.fromhex(r["input_hash"][2:]),
            "outputHash": bytes.fromhex(r["output_hash"][2:]),
            "node": r["node"],
            "mode": r["mode"],
            "price": int(r["price"]),
            "payer": r["payer"],
            "timestamp": r["timestamp"],
        },
    }


def main():
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    signed = doc.get("receipt") if "request_id" in doc and "outputs" in doc else doc
    message = encode_typed_data(full_message=typed_data(signed))
    signer = Account.recover_message(message, signature=signed["signature"])
    from eth_account.messages import _hash_eip191_message

    digest = "0x" + _hash_eip191_message(message).hex()
    print(json.dumps({"signer": signer, "digest": digest}))


if __name__ == "__main__":
    main()
