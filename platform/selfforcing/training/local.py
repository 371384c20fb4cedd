"""Single-process training-step orchestration (SPEC §4): the schedule of generator and critic updates.

Per step: on every ``critic_steps_per_generator_step``-th step the generator makes a sample with grad,
the scoring role returns dL/dx for it (detached), and the generator applies it; the scoring role then
trains on the same (detached) samples. On other steps the generator only samples, without grad, for the
critic. The generator talks to the scoring role only through ``score_gradient`` / ``update`` -- the same
calls a Ray actor will serve -- so the distributed version changes the transport, not the algorithm.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Protocol

import torch

from ..objectives import Conditioning, NoisyDraw, SampleMeta, ScoreResult
from .config import TrainingConfig
from .generator import GeneratorRole, TrainBatch


class ScoringRole(Protocol):
    """What the trainer needs from a critic or discriminator (local object or remote actor)."""

    def score_gradient(
        self, x: torch.Tensor, cond: Conditioning, meta: SampleMeta | None = None, draw: NoisyDraw | None = None
    ) -> ScoreResult: ...

    def update(
        self, x: torch.Tensor, cond: Conditioning, draw: NoisyDraw | None = None, meta: SampleMeta | None = None
    ) -> dict[str, float]: ...


@dataclass
class TrainState:
    """Counters of a run (checkpointed with the weights)."""

    step: int = 0
    generator_steps: int = 0
    critic_steps: int = 0
    skipped_generator_steps: int = 0
    skipped_critic_steps: int = 0
    consecutive_skipped_steps: int = 0  # steps in a row with a skipped (non-finite) update


class LocalTrainer:
    """Generator + one scoring role in this process."""

    def __init__(self, generator: GeneratorRole, scorer: ScoringRole, config: TrainingConfig) -> None:
        self.generator = generator
        self.scorer = scorer
        self.config = config
        self.state = TrainState()

    def is_generator_step(self, step: int) -> bool:
        return step % self.config.critic_steps_per_generator_step == 0

    def train_step(self, batch: TrainBatch) -> dict[str, float]:
        """One step; returns its metrics (losses, grad norms, skip flags, counters)."""
        step = self.state.step
        cond = batch.conditioning()
        metrics: dict[str, float] = {"step": float(step)}
        if self.is_generator_step(step):
            sample = self.generator.sample(batch, step)
            x = sample.video.detach()
            meta = self.generator.meta(sample, step, batch)
            grad, score_metrics = self.scorer.score_gradient(x, cond, meta)
            metrics.update(score_metrics)
            finite = bool(torch.isfinite(grad).all())
            gen = self.generator.apply_gradient(sample, grad, step, loss=None if finite else float("nan"))
            metrics.update(gen)
            if gen["generator_skipped"]:
                self.state.skipped_generator_steps += 1
            else:
                self.state.generator_steps += 1
        else:
            with torch.no_grad():
                sample = self.generator.sample(batch, step)
            x = sample.video.detach()
            meta = self.generator.meta(sample, step, batch)
        critic = self.scorer.update(x, cond, meta=meta)
        metrics.update(critic)
        skipped = any(v for k, v in critic.items() if k.endswith("_skipped"))
        if skipped:
            self.state.skipped_critic_steps += 1
        else:
            self.state.critic_steps += 1
        if skipped or metrics.get("generator_skipped", 0.0):
            self.state.consecutive_skipped_steps += 1
        else:
            self.state.consecutive_skipped_steps = 0
        self.state.step += 1
        metrics.update({k: float(v) for k, v in asdict(self.state).items()})
        return metrics

    def run(self, batches: Iterable[TrainBatch], num_steps: int | None = None) -> list[dict[str, float]]:
        """Train on ``batches`` for ``num_steps`` steps (default: the config's ``max_steps``)."""
        num_steps = self.config.max_steps if num_steps is None else num_steps
        history = []
        for batch in batches:
            if len(history) >= num_steps:
                break
            history.append(self.train_step(batch))
        return history
