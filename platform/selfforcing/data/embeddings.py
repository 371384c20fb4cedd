"""Prompt embeddings as Parquet (kind ``embeddings``): written by the encode_prompts job, read by every
job that needs text conditioning, so none of them loads the (5B-parameter) text encoder.

Each row: the prompt, its embedding [L, D] stored without its all-zero trailing rows (``max_length`` L
restores them), and optionally the negative prompt's embedding for classifier-free guidance.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import torch

from .batches import EmbeddingBatch, embedding_batch
from .tables import build_table, read_table, unique_ids, write_table
from .tensor_bytes import tensor_to_bytes, trim_zero_rows


def _encoded(embeddings: Sequence[torch.Tensor | None]) -> tuple[list, list, list, list]:
    """(bytes, shapes, dtypes, max_lengths) of [L, D] embeddings with their zero tail trimmed."""
    out: tuple[list, list, list, list] = ([], [], [], [])
    for e in embeddings:
        if e is None:
            for col in out:
                col.append(None)
            continue
        data, shape, dtype = tensor_to_bytes(trim_zero_rows(e))
        for col, value in zip(out, (data, shape, dtype, int(e.shape[0])), strict=True):
            col.append(value)
    return out


def embeddings_table(
    prompts: Sequence[str],
    embeddings: torch.Tensor | Sequence[torch.Tensor],
    *,
    ids: Sequence[str] | None = None,
    negative_prompts: Sequence[str | None] | None = None,
    negative_embeddings: torch.Tensor | Sequence[torch.Tensor | None] | None = None,
    splits: Sequence[str | None] | None = None,
    extra: dict[str, Sequence] | None = None,
) -> pa.Table:
    """A table of N embeddings [N, L, D] (or N tensors [L, D]); negatives likewise, None where absent."""
    n = len(prompts)
    emb, shapes, dtypes, lengths = _encoded(list(embeddings))
    if any(e is None for e in emb):
        raise ValueError("every prompt needs an embedding (None given)")
    negatives = list(negative_embeddings) if negative_embeddings is not None else [None] * n
    if len(negatives) != n:
        raise ValueError(f"{len(negatives)} negative embeddings for {n} prompts")
    neg, neg_shapes, neg_dtypes, neg_lengths = _encoded(negatives)
    for i, (a, b) in enumerate(zip(lengths, neg_lengths, strict=True)):
        if b is not None and a != b:
            raise ValueError(f"row {i}: negative embedding has {b} rows, the prompt's {a} (both are max_length)")
    cols = {
        "id": unique_ids(n, ids), "prompt": list(prompts),
        "split": list(splits) if splits is not None else [None] * n,
        "embedding": emb, "embedding_shape": shapes, "embedding_dtype": dtypes, "max_length": lengths,
        "negative_prompt": list(negative_prompts) if negative_prompts is not None else [None] * n,
        "negative_embedding": neg, "negative_embedding_shape": neg_shapes, "negative_embedding_dtype": neg_dtypes,
    }
    return build_table("embeddings", cols, extra)


def write_embeddings(path: str | Path, prompts: Sequence[str], embeddings, **kwargs) -> Path:
    """Write one file of embeddings (arguments as ``embeddings_table``)."""
    return write_table(path, embeddings_table(prompts, embeddings, **kwargs))


def read_embeddings(path: str | Path, allow_partial: bool = False) -> EmbeddingBatch:
    """Every row of a file or sharded directory as one ``EmbeddingBatch`` (text [N, L, D])."""
    return embedding_batch(read_table(path, "embeddings", allow_partial=allow_partial))
