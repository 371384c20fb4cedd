"""Tensors as Parquet cells: raw C-order bytes + shape + dtype name, bit-exact for every dtype.

Bytes rather than nested lists: a write-read round trip returns the same bits (bfloat16 too, which
Arrow has no type for), and decoding is one ``frombuffer`` instead of a Python loop over elements.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
    "uint8": torch.uint8, "int8": torch.int8, "int16": torch.int16, "int32": torch.int32, "int64": torch.int64,
    "bool": torch.bool,
}


def tensor_to_bytes(x: torch.Tensor | np.ndarray) -> tuple[bytes, list[int], str]:
    """(raw C-order bytes, shape, dtype name) of a tensor or array; bfloat16 is stored as its bits."""
    t = torch.as_tensor(x).detach().cpu().contiguous()
    name = str(t.dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise ValueError(f"cannot store dtype {name}; storable dtypes are {sorted(DTYPES)}")
    raw = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
    return raw.numpy().tobytes(), list(t.shape), name


def tensor_from_bytes(data: bytes, shape: Sequence[int], dtype: str) -> torch.Tensor:
    """Inverse of ``tensor_to_bytes``: a torch tensor of that shape and dtype (a copy, writable)."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown stored dtype {dtype!r}; known dtypes are {sorted(DTYPES)}")
    shape = [int(s) for s in shape]
    if dtype == "bfloat16":
        return torch.from_numpy(np.frombuffer(data, dtype=np.int16).copy()).view(torch.bfloat16).reshape(shape)
    np_dtype = torch.empty(0, dtype=DTYPES[dtype]).numpy().dtype
    return torch.from_numpy(np.frombuffer(data, dtype=np_dtype).copy()).reshape(shape)


def trim_zero_rows(x: torch.Tensor) -> torch.Tensor:
    """[L, D] -> its first n rows, n = 1 + the last row that is not all zero (at least one row kept).

    ``pad_rows(trim_zero_rows(x), L)`` equals ``x`` (zeros of the dropped rows come back as +0.0 even where
    they were -0.0, which no network op tells apart). A Wan text embedding is zero past its prompt's
    tokens, so this keeps ~tokens rows of the 512.
    """
    if x.ndim != 2:
        raise ValueError(f"expected a [L, D] embedding, got shape {tuple(x.shape)}")
    nonzero = torch.nonzero(x.ne(0).any(dim=1)).flatten()
    n = int(nonzero[-1]) + 1 if len(nonzero) else 1
    return x[:n]


def pad_rows(x: torch.Tensor, length: int) -> torch.Tensor:
    """[n, D] -> [length, D] with zero rows appended (n <= length)."""
    if x.shape[0] > length:
        raise ValueError(f"embedding has {x.shape[0]} rows, more than its max_length={length}")
    if x.shape[0] == length:
        return x
    return torch.cat([x, x.new_zeros(length - x.shape[0], *x.shape[1:])])
