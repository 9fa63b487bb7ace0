"""Rebuild what `pack.py` packed: the model folder (dropped embedding rows = NaN) and the BEIR set.

    python benchmarks/device/unpack.py .device /tmp/device
"""

from __future__ import annotations

import json
import lzma
import shutil
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> int:
    source, dest = Path(argv[0]), Path(argv[1])
    from safetensors.numpy import save_file

    model = dest / "model"
    shutil.copytree(source / "model", model, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("weights.*", "word_ids.npy"))
    meta = json.loads((source / "model" / "weights.json").read_text())
    planes = [np.frombuffer(lzma.decompress((source / "model" / f"weights.plane{k}.xz").read_bytes()), np.uint8)
              for k in range(4)]
    flat = np.stack(planes, axis=1).reshape(-1).view(np.float32)
    ids = np.load(source / "model" / "word_ids.npy")
    tensors, at = {}, 0
    for name in meta["names"]:
        shape = meta["kept_shapes"][name]
        count = int(np.prod(shape))
        block = flat[at : at + count].reshape(shape)
        at += count
        if name == meta["word"]:
            full = np.full(meta["shapes"][name], np.nan, dtype=np.float32)
            full[ids] = block
            block = full
        tensors[name] = np.ascontiguousarray(block)
    assert at == flat.size, (at, flat.size)
    save_file(tensors, str(model / "model.safetensors"), metadata={"format": "pt"})
    for folder in (source / "data").iterdir():
        out = dest / "data" / folder.name
        out.mkdir(parents=True, exist_ok=True)
        for packed in folder.glob("*.xz"):
            (out / packed.name[:-3]).write_bytes(lzma.decompress(packed.read_bytes()))
    print(f"unpacked into {dest}: {len(ids)} embedding rows, {sum(t.size for t in tensors.values())} weights")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
