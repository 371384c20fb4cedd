"""The encode_prompts job: prompts -> text embeddings, with the text encoder in a Ray Data actor pool.

Input: a Parquet prompt set (file or sharded directory; ``split`` selects one split) or a text file with
one prompt a line, as the release's prompt lists are (blank lines skipped; ids are the prompt's position,
``00000000``, ...). Output: an ``embeddings`` dataset of ``shard_size``-prompt shards. Each actor holds one
encoder (loaded from ``platform.text_encoder.path``, or the seeded random-weight UMT5 of tiny presets);
finished shards are skipped on a rerun. Training jobs read the embeddings and never load the encoder.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from ...models.factory import DTYPES, resolve_device
from ...models.text_encoder import TextEncoder
from ..embeddings import embeddings_table
from ..parquet import PromptSet, read_prompts
from .config import EncodePromptsJobConfig
from .runner import DataJobResult, ShardActor, ShardPlan, run_sharded_job, shard_ranges


def read_prompt_source(path: str | Path, split: str | None = None) -> PromptSet:
    """Prompts from a Parquet prompt set (file or directory) or a text file (one prompt a line)."""
    path = Path(path)
    if path.is_dir() or path.suffix == ".parquet":
        prompts = read_prompts(path)
    elif path.is_file():
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        kept = [line for line in lines if line]
        prompts = PromptSet([f"{i:08d}" for i in range(len(kept))], kept, [None] * len(kept))
    else:
        raise FileNotFoundError(f"input={str(path)!r}: no such prompt file or directory")
    if split is not None:
        if not any(s is not None for s in prompts.splits or []):
            raise ValueError(f"split={split!r} given but {path} has no split column (text files have none)")
        prompts = prompts.select(split)
    if not len(prompts):
        raise ValueError(f"input={str(path)!r} holds no prompts")
    return prompts


class PromptEncoder:
    """A ``TextEncoder`` that turns rows (prompt, negative prompt) into an ``embeddings`` table.

    Prompts are encoded ``batch_size`` at a time; each distinct negative prompt once per call (usually
    every row shares the default one).
    """

    def __init__(self, encoder: TextEncoder, batch_size: int, encode_negative: bool = True) -> None:
        self.encoder = encoder
        self.batch_size = batch_size
        self.encode_negative = encode_negative

    @classmethod
    def from_job(cls, config: EncodePromptsJobConfig) -> PromptEncoder:
        platform = config.platform
        dtype = DTYPES[config.dtype or platform.runtime.dtype]
        encoder = TextEncoder.from_config(platform.text_encoder, device=resolve_device(platform.runtime.device),
                                          dtype=dtype, seed=config.encoder_seed)
        return cls(encoder, config.pool.batch_size, config.encode_negative)

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """[N, L, D] embeddings on the CPU, ``batch_size`` prompts per encoder call."""
        parts = [self.encoder.encode(prompts[a : a + self.batch_size]).cpu()
                 for a in range(0, len(prompts), self.batch_size)]
        return torch.cat(parts)

    def table(self, ids: list[str], prompts: list[str], negative_prompts: list[str | None],
              splits: list[str | None]) -> pa.Table:
        text = self.encode(prompts)
        negatives: list[torch.Tensor | None] = [None] * len(prompts)
        if self.encode_negative:
            distinct = sorted({n for n in negative_prompts if n is not None})
            encoded = dict(zip(distinct, self.encode(distinct), strict=True)) if distinct else {}
            negatives = [None if n is None else encoded[n] for n in negative_prompts]
        return embeddings_table(prompts, text, ids=ids, negative_prompts=negative_prompts,
                                negative_embeddings=negatives, splits=splits)


class EncodeShardActor(ShardActor):
    """One encoder per actor; a call encodes one shard of prompts and writes it."""

    kind = "embeddings"

    def __init__(self, output: str, config: EncodePromptsJobConfig) -> None:
        super().__init__(output)
        self.encoder = PromptEncoder.from_job(config)

    def compute(self, task: dict[str, Any]) -> pa.Table:
        return self.encoder.table(task["ids"], task["prompts"], task["negative_prompts"], task["splits"])


@dataclass
class EncodePlan:
    """Everything decided on the driver before any actor starts."""

    output: Path
    prompts: PromptSet
    negative_prompts: list[str | None]
    shards: list[range]
    fingerprint: dict[str, Any]

    def task(self, index: int) -> dict[str, Any]:
        rows = self.shards[index]

        def pick(values: list) -> list:
            return [values[i] for i in rows]

        return {"index": index, "ids": pick(self.prompts.ids), "prompts": pick(self.prompts.prompts),
                "negative_prompts": pick(self.negative_prompts), "splits": pick(self.prompts.splits or [])}


def plan_encode(config: EncodePromptsJobConfig) -> EncodePlan:
    """Read the prompts, resolve each row's negative prompt, cut shards, fingerprint the content."""
    prompts = read_prompt_source(config.input, config.split)
    default = config.negative_prompt if config.negative_prompt is not None else \
        config.platform.generation.negative_prompt
    negatives = [None] * len(prompts) if not config.encode_negative else \
        [n if n is not None else default for n in prompts.negative_prompts]
    content = hashlib.sha256(json.dumps(
        [prompts.ids, prompts.prompts, negatives, prompts.splits], ensure_ascii=False).encode()).hexdigest()
    fingerprint = {
        "prompts_sha256": content, "num_prompts": len(prompts), "shard_size": config.shard_size,
        "dtype": config.dtype or config.platform.runtime.dtype, "encoder_seed": config.encoder_seed,
        "text_encoder": config.platform.text_encoder.model_dump(mode="json"),
    }
    return EncodePlan(config.output_dir().resolve(), prompts, negatives,
                      shard_ranges(len(prompts), config.shard_size), fingerprint)


def encode_prompts(config: EncodePromptsJobConfig) -> DataJobResult:
    """Run the encode_prompts job (see the module docstring); returns what it computed and skipped."""
    plan = plan_encode(config)
    shards = ShardPlan(plan.output, "embeddings", len(plan.shards), len(plan.prompts), plan.fingerprint, plan.task)
    return run_sharded_job(config, "encode_prompts", shards, EncodeShardActor, unit="prompts")
