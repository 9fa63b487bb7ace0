"""Optional integrations; each submodule imports its own extra, so import the one you need.

- `tokenpool.integrations.llama_index.TokenPoolEmbedding` (extra ``llama-index``)
- `tokenpool.integrations.ray.embed_dataset` / `embed_parquet` (extra ``ray``)
- `tokenpool.torch.Pool`, an ``nn.Module`` for training loops (needs torch)
"""
