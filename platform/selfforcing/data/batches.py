"""Rows of a dataset -> torch tensors: what a training worker does with each streamed batch.

A Ray Train worker streams its shard of a dataset (``streaming.read_dataset``) and turns each batch into
typed tensors::

    shard = ray.train.get_dataset_shard("train")
    for batch in shard.iter_batches(batch_size=8):          # default "numpy" format, or "pyarrow"
        b = ode_batch(batch, device=device)                   # ODEBatch, shapes below
        loss = ode_regression_loss(student, b.states, b.timesteps, b.target, b.text, ...)

The same functions decode an in-memory ``pyarrow.Table`` (``read_embeddings`` / ``read_ode_trajectories``
use them), a ``dict`` of numpy arrays (Ray Data's numpy format: object arrays of bytes and shape arrays)
or a pandas DataFrame. Tensors keep their stored dtype (bf16 stays bf16); embeddings are zero-padded back
to their ``max_length`` rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import torch

from .tensor_bytes import pad_rows, tensor_from_bytes

Batch = pa.Table | Mapping[str, Any]


@dataclass
class EmbeddingBatch:
    """B prompt embeddings: ``text`` [B, L, D]; ``negative_text`` [B, L, D] or None (no row has one)."""

    ids: list[str]
    prompts: list[str]
    text: torch.Tensor
    negative_prompts: list[str | None]
    negative_text: torch.Tensor | None
    splits: list[str | None]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class ODEBatch:
    """B teacher ODE trajectories.

    states [B, K, F, C, h, w]: the ODE state at each of the K generator timesteps; timesteps [K] float32
    (shared by every row of a dataset); target [B, F, C, h, w]: the final sample; text [B, L, D]: the
    conditioning embedding; seeds [B] int64: the noise seed of each pair; pair_indices [B] int64.
    """

    ids: list[str]
    prompt_ids: list[str]
    prompts: list[str]
    pair_indices: torch.Tensor
    seeds: torch.Tensor
    states: torch.Tensor
    timesteps: torch.Tensor
    target: torch.Tensor
    text: torch.Tensor

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class LatentBatch:
    """B video latents [B, F, C, h, w] (equal shapes) with their prompts."""

    ids: list[str]
    prompts: list[str]
    latents: torch.Tensor

    def __len__(self) -> int:
        return len(self.ids)


def columns_of(batch: Batch) -> dict[str, list]:
    """Column name -> list of cells, from a pyarrow Table, a dict of arrays or a pandas DataFrame."""
    if isinstance(batch, pa.Table):
        return {c: batch.column(c).to_pylist() for c in batch.column_names}
    if hasattr(batch, "to_dict") and hasattr(batch, "columns"):  # pandas, without importing it
        return {c: batch[c].tolist() for c in batch.columns}
    if isinstance(batch, Mapping):
        return {k: list(v) for k, v in batch.items()}
    raise TypeError(f"a batch must be a pyarrow.Table, a dict of arrays or a DataFrame, got {type(batch).__name__}")


def _need(cols: dict[str, list], names: list[str], kind: str) -> None:
    missing = [n for n in names if n not in cols]
    if missing:
        raise KeyError(f"batch lacks the {kind} columns {missing}; it has {sorted(cols)}")


def _decode(cols: dict[str, list], name: str, row: int) -> torch.Tensor:
    return tensor_from_bytes(cols[name][row], cols[f"{name}_shape"][row], cols[f"{name}_dtype"][row])


def _stack(tensors: list[torch.Tensor], ids: list[str], what: str) -> torch.Tensor:
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        by_shape = {s: [i for i, t in zip(ids, tensors, strict=True) if tuple(t.shape) == s][:3] for s in shapes}
        raise ValueError(f"cannot batch {what} of different shapes (shape: first ids) {by_shape}")
    return torch.stack(tensors)


def _embeddings(cols: dict[str, list], name: str, rows: list[int]) -> list[torch.Tensor]:
    return [pad_rows(_decode(cols, name, r), int(cols["max_length"][r])) for r in rows]


def _to(x: torch.Tensor, device: torch.device | str | None) -> torch.Tensor:
    return x if device is None else x.to(device, non_blocking=True)


def embedding_batch(batch: Batch, device: torch.device | str | None = None) -> EmbeddingBatch:
    """Rows of an ``embeddings`` dataset -> ``EmbeddingBatch`` (text [B, L, D])."""
    cols = columns_of(batch)
    _need(cols, ["id", "prompt", "embedding", "embedding_shape", "embedding_dtype", "max_length"], "embeddings")
    ids = [str(i) for i in cols["id"]]
    rows = list(range(len(ids)))
    text = _stack(_embeddings(cols, "embedding", rows), ids, "embeddings")
    negative = cols.get("negative_embedding") or [None] * len(ids)
    has = [r for r in rows if negative[r] is not None]
    negative_text = None
    if has:
        if len(has) < len(rows):
            lacking = [ids[r] for r in rows if negative[r] is None][:5]
            raise ValueError(f"rows {lacking} have no negative embedding while others in the batch do")
        negative_text = _stack(_embeddings(cols, "negative_embedding", rows), ids, "negative embeddings")
    return EmbeddingBatch(
        ids, [str(p) for p in cols["prompt"]], _to(text, device),
        list(cols.get("negative_prompt") or [None] * len(ids)),
        None if negative_text is None else _to(negative_text, device),
        list(cols.get("split") or [None] * len(ids)),
    )


def ode_batch(batch: Batch, device: torch.device | str | None = None) -> ODEBatch:
    """Rows of an ``ode_trajectories`` dataset -> ``ODEBatch`` (shapes in its docstring)."""
    cols = columns_of(batch)
    _need(cols, ["id", "pair_index", "prompt_id", "prompt", "seed", "states", "timesteps", "target",
                 "embedding", "max_length"], "ode_trajectories")
    ids = [str(i) for i in cols["id"]]
    rows = list(range(len(ids)))
    grids = {tuple(float(t) for t in ts) for ts in cols["timesteps"]}
    if len(grids) > 1:
        raise ValueError(f"rows of one batch hold different timestep grids {sorted(grids)}: "
                         "trajectories of different ODE-pair jobs cannot be batched together")
    timesteps = torch.tensor(next(iter(grids)) if grids else (), dtype=torch.float32)
    return ODEBatch(
        ids=ids, prompt_ids=[str(p) for p in cols["prompt_id"]], prompts=[str(p) for p in cols["prompt"]],
        pair_indices=torch.tensor([int(i) for i in cols["pair_index"]], dtype=torch.int64),
        seeds=torch.tensor([int(s) for s in cols["seed"]], dtype=torch.int64),
        states=_to(_stack([_decode(cols, "states", r) for r in rows], ids, "ODE states"), device),
        timesteps=_to(timesteps, device),
        target=_to(_stack([_decode(cols, "target", r) for r in rows], ids, "ODE targets"), device),
        text=_to(_stack(_embeddings(cols, "embedding", rows), ids, "embeddings"), device),
    )


def latent_batch(batch: Batch, device: torch.device | str | None = None) -> LatentBatch:
    """Rows of a ``latents`` dataset -> ``LatentBatch`` (latents [B, F, C, h, w], equal shapes)."""
    cols = columns_of(batch)
    _need(cols, ["id", "prompt", "latent", "latent_shape", "latent_dtype"], "latents")
    ids = [str(i) for i in cols["id"]]
    latents = _stack([_decode(cols, "latent", r) for r in range(len(ids))], ids, "latents")
    return LatentBatch(ids, [str(p) for p in cols["prompt"]], _to(latents, device))


BATCH_DECODERS = {"embeddings": embedding_batch, "ode_trajectories": ode_batch, "latents": latent_batch}


def to_tensors(batch: Batch, kind: str, device: torch.device | str | None = None):
    """Decode a batch of ``kind`` (embeddings, ode_trajectories, latents) into its typed tensors."""
    if kind not in BATCH_DECODERS:
        raise ValueError(f"no tensor batch for dataset kind {kind!r}; kinds with one: {sorted(BATCH_DECODERS)}")
    return BATCH_DECODERS[kind](batch, device)
