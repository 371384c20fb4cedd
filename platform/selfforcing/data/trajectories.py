"""Teacher ODE trajectories as Parquet (kind ``ode_trajectories``): written by the ode_pairs job, streamed
by ODE initialisation.

One row per pair: the states at the K generator timesteps [K, F, C, h, w], the timesteps [K], the final
sample [F, C, h, w], the pair's noise seed and global index, and the conditioning embedding (trimmed like
``embeddings``), so each row is a complete regression example.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import torch

from ..forcing.ode_init import ODEPairs
from .batches import ODEBatch, ode_batch
from .tables import build_table, read_table, write_table
from .tensor_bytes import tensor_to_bytes, trim_zero_rows


def pair_id(pair_index: int) -> str:
    """The row id of global pair ``pair_index`` (sortable)."""
    return f"pair-{pair_index:09d}"


def ode_table(
    pairs: ODEPairs,
    *,
    pair_indices: Sequence[int],
    seeds: Sequence[int],
    prompt_ids: Sequence[str],
    prompts: Sequence[str],
    text: torch.Tensor,
) -> pa.Table:
    """A table of B pairs: ``pairs`` states [B, K, F, C, h, w], timesteps [K], target [B, F, C, h, w];
    ``text`` [B, L, D] the embeddings the teacher was conditioned on."""
    b = pairs.states.shape[0]
    for name, values in (("pair_indices", pair_indices), ("seeds", seeds), ("prompt_ids", prompt_ids),
                         ("prompts", prompts), ("text", text)):
        if len(values) != b:
            raise ValueError(f"{name} has {len(values)} entries for {b} pairs")
    states = [tensor_to_bytes(s) for s in pairs.states]
    target = [tensor_to_bytes(t) for t in pairs.target]
    emb = [tensor_to_bytes(trim_zero_rows(e)) for e in text]
    timesteps = [float(t) for t in pairs.timesteps]
    cols = {
        "id": [pair_id(int(i)) for i in pair_indices], "pair_index": [int(i) for i in pair_indices],
        "prompt_id": [str(p) for p in prompt_ids], "prompt": list(prompts), "seed": [int(s) for s in seeds],
        "states": [s[0] for s in states], "states_shape": [s[1] for s in states],
        "states_dtype": [s[2] for s in states], "timesteps": [timesteps] * b,
        "target": [t[0] for t in target], "target_shape": [t[1] for t in target],
        "target_dtype": [t[2] for t in target],
        "embedding": [e[0] for e in emb], "embedding_shape": [e[1] for e in emb],
        "embedding_dtype": [e[2] for e in emb], "max_length": [int(text.shape[1])] * b,
    }
    return build_table("ode_trajectories", cols)


def write_ode_trajectories(path: str | Path, pairs: ODEPairs, **kwargs) -> Path:
    """Write one file of ODE pairs (arguments as ``ode_table``)."""
    return write_table(path, ode_table(pairs, **kwargs))


def read_ode_trajectories(path: str | Path, allow_partial: bool = False) -> ODEBatch:
    """Every pair of a file or sharded directory as one ``ODEBatch``, ordered by pair index."""
    table = read_table(path, "ode_trajectories", allow_partial=allow_partial)
    table = table.sort_by("pair_index") if table.num_rows else table
    return ode_batch(table)
