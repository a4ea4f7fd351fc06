#!/usr/bin/env python3
"""Drive a verinet node with the official `openai` Python client, unchanged.

Used by verinet's automated tests (crates/node/tests/it/openai.rs) to prove that OpenAI's own
client works against a node: it lists the models, chats (streamed and not, with usage), completes
text, embeds, and maps errors to the client's exception classes. It also recomputes what the
`verinet` field of an answer claims, with eth_account and pycryptodome-free keccak from
eth_utils: the receipt's token-id hashes and its EIP-712 `CompletionReceipt` signer.

Usage: openai_client.py BASE_URL CHAT_MODEL EMBED_MODEL; prints one JSON object of findings.
"""

import json
import math
import struct
import sys

import openai
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak


def ids_hash(ids):
    return "0x" + keccak(b"".join(struct.pack("<I", i) for i in ids)).hex()


def completion_typed_data(signed):
    r = signed["receipt"]
    c = r["completion"]
    fields = [
        ("requestId", "string"), ("modelHash", "bytes32"), ("inputHash", "bytes32"), ("outputHash", "bytes32"),
        ("node", "address"), ("mode", "string"), ("price", "uint256"), ("payer", "address"), ("timestamp", "uint64"),
        ("promptTokens", "uint32"), ("completionTokens", "uint32"), ("temperature", "string"), ("topP", "string"),
        ("seed", "uint64"), ("maxTokens", "uint32"), ("stop", "string[]"), ("finishReason", "string"),
    ]
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
            ],
            "CompletionReceipt": [{"name": n, "type": t} for n, t in fields],
        },
        "primaryType": "CompletionReceipt",
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
            "promptTokens": c["prompt_tokens"],
            "completionTokens": c["completion_tokens"],
            "temperature": c["temperature"],
            "topP": c["top_p"],
            "seed": c["seed"],
            "maxTokens": c["max_tokens"],
            "stop": c["stop"],
            "finishReason": c["finish_reason"],
        },
    }


def check_proof(proof):
    """The receipt's hashes are those of the ids returned, and eth_account recovers its node."""
    signed = proof["receipt"]
    r = signed["receipt"]
    signer = Account.recover_message(encode_typed_data(full_message=completion_typed_data(signed)), signature=signed["signature"])
    return {
        "input_hash_ok": ids_hash(proof["prompt_ids"]) == r["input_hash"],
        "output_hash_ok": ids_hash(proof["output_ids"]) == r["output_hash"],
        "signer_ok": signer.lower() == r["node"].lower(),
    }


def main():
    base, chat_model, embed_model = sys.argv[1:4]
    client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
    out = {"openai_version": openai.__version__}

    out["models"] = sorted(m.id for m in client.models.list())

    messages = [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "What is the capital of France?"}]
    chat = client.chat.completions.create(model=chat_model, messages=messages, max_tokens=16, temperature=0)
    out["chat"] = {
        "content": chat.choices[0].message.content,
        "finish_reason": chat.choices[0].finish_reason,
        "usage": chat.usage.model_dump(),
        "proof": check_proof(chat.model_extra["verinet"]),
    }

    stream = client.chat.completions.create(
        model=chat_model, messages=messages, max_tokens=16, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    pieces, usage, finish, proof = [], None, None, None
    for chunk in stream:
        if chunk.choices:
            if chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
        if chunk.model_extra.get("verinet"):
            proof = check_proof(chunk.model_extra["verinet"])
    out["stream"] = {"content": "".join(pieces), "chunks": len(pieces), "finish_reason": finish, "usage": usage, "proof": proof}

    text = client.completions.create(model=chat_model, prompt="The sky is", max_tokens=8, temperature=0)
    out["completion"] = {"text": text.choices[0].text, "usage": text.usage.model_dump(), "finish_reason": text.choices[0].finish_reason}

    emb = client.embeddings.create(model=embed_model, input=["a cat sits on the mat", "a dog sleeps on the rug", "quarterly earnings"])
    vecs = [d.embedding for d in emb.data]
    out["embeddings"] = {
        "count": len(vecs),
        "dims": [len(v) for v in vecs],
        "norms": [math.sqrt(sum(x * x for x in v)) for v in vecs],
        "cos_cat_dog": sum(a * b for a, b in zip(vecs[0], vecs[1])),
        "cos_cat_earnings": sum(a * b for a, b in zip(vecs[0], vecs[2])),
        "prompt_tokens": emb.usage.prompt_tokens,
    }
    # The client asks for base64 by default when numpy is around and decodes it itself; ask
    # for floats explicitly too and compare.
    emb_f = client.embeddings.create(model=embed_model, input=["a cat sits on the mat"], encoding_format="float")
    out["embeddings"]["float_dims"] = len(emb_f.data[0].embedding)

    errors = {}
    try:
        client.chat.completions.create(model="no-such-model", messages=messages)
    except openai.NotFoundError as e:
        errors["unknown_model"] = {"class": "NotFoundError", "status": e.status_code, "code": e.code}
    except Exception as e:  # noqa: BLE001 - the finding is the class
        errors["unknown_model"] = {"class": type(e).__name__}
    try:
        client.chat.completions.create(model=chat_model, messages=[{"role": "user", "content": "word " * 3000}])
    except openai.BadRequestError as e:
        errors["too_long"] = {"class": "BadRequestError", "status": e.status_code, "code": e.code}
    except Exception as e:  # noqa: BLE001
        errors["too_long"] = {"class": type(e).__name__}
    out["errors"] = errors
    print(json.dumps(out))


if __name__ == "__main__":
    main()
