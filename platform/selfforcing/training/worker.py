"""One generator worker's training step against a scoring service it reaches through a client.

This is ``LocalTrainer``'s algorithm for one data-parallel rank: the rank holds a slice of the global
batch (``BatchLayout``: its micro-batches' sample indices), sends each detached sample once to its
scoring actor, applies the returned dL/dx, and steps its optimiser once per training step. The client
hides the transport (in-process here, Ray object refs in ``distributed``), so this class runs and is
tested without Ray.

Overlap: the scoring actor's update on step k's samples cannot affect anything the generator does
before step k+1's scoring, so with ``overlap`` the worker does not wait for it: it back-propagates and
rolls out step k+1 while the actor updates, and the actor itself holds step k+1's scoring until update k
is applied. Sequential mode waits for the update at the end of every step; both compute the same numbers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch

from ..objectives import ScoreResult
from .batches import BatchSource
from .config import TrainingConfig
from .generator import GeneratorRole
from .local import TrainState
from .scoring_service import ScorePayload, ScoringService


@dataclass(frozen=True)
class BatchLayout:
    """Which samples of a step's global batch this rank holds: micro-batch m of rank r holds indices
    [(r * accumulation + m) * micro, ... + micro)."""

    rank: int
    world_size: int
    micro_batch_size: int
    accumulation_steps: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank={self.rank} outside [0, world_size={self.world_size})")

    @property
    def global_batch_size(self) -> int:
        return self.world_size * self.accumulation_steps * self.micro_batch_size

    def sample_ids(self, micro: int) -> tuple[int, ...]:
        start = (self.rank * self.accumulation_steps + micro) * self.micro_batch_size
        return tuple(range(start, start + self.micro_batch_size))


class PendingUpdate(Protocol):
    def result(self) -> dict[str, float]: ...


class ScoringClient(Protocol):
    """How a worker reaches its scoring actor."""

    def put(self, payload: ScorePayload) -> Any:
        """Ship a payload once; the handle is passed to both ``score`` and ``update``."""

    def score(self, step: int, handle: Any) -> ScoreResult:
        """dL/dx of the payload (blocks)."""

    def update(self, step: int, handle: Any) -> PendingUpdate:
        """Queue the payload for step ``step``'s update (returns at once)."""


@dataclass
class _Done:
    metrics: dict[str, float]

    def result(self) -> dict[str, float]:
        return self.metrics


class LocalScoringClient:
    """A client over an in-process ``ScoringService`` (one worker, or tests of the schedule)."""

    def __init__(self, service: ScoringService) -> None:
        self.service = service

    def put(self, payload: ScorePayload) -> ScorePayload:
        return payload

    def score(self, step: int, handle: ScorePayload) -> ScoreResult:
        return self.service.score(handle)

    def update(self, step: int, handle: ScorePayload) -> PendingUpdate:
        if self.service.add(handle):
            return _Done(self.service.run_update(step))
        return _Later(self.service, step)


@dataclass
class _Later:
    service: ScoringService
    step: int

    def result(self) -> dict[str, float]:
        if self.step not in self.service.results:
            raise RuntimeError(f"step {self.step}'s update never ran: a sender's payloads are missing")
        return self.service.results[self.step]


@dataclass
class _InFlight:
    step: int
    metrics: dict[str, float]
    updates: list[PendingUpdate]


class WorkerTrainer:
    """Steps of one generator rank. ``train_step`` returns the records of the steps it completed: a step
    is complete when its scoring actor's update has reported (one step later under overlap); ``flush``
    waits for the rest."""

    def __init__(
        self, generator: GeneratorRole, client: ScoringClient, config: TrainingConfig, source: BatchSource,
        layout: BatchLayout, overlap: bool = True, state: TrainState | None = None,
    ) -> None:
        if layout.global_batch_size != config.batch_size:
            raise ValueError(
                f"layout holds a global batch of {layout.global_batch_size}, training.batch_size={config.batch_size}"
            )
        acc = getattr(generator.optimizer, "accumulation_steps", 1)
        if acc != layout.accumulation_steps:
            raise ValueError(
                f"the generator's optimiser averages {acc} micro-batches per step, the layout has "
                f"{layout.accumulation_steps}: build it with the same gradient accumulation"
            )
        self.generator, self.client, self.config = generator, client, config
        self.source, self.layout, self.overlap = source, layout, overlap
        self.state = state if state is not None else TrainState()
        self._in_flight: _InFlight | None = None

    def is_generator_step(self, step: int) -> bool:
        return step % self.config.critic_steps_per_generator_step == 0

    def train_step(self) -> list[dict[str, float]]:
        step = self.state.step
        generator_step = self.is_generator_step(step)
        metrics: dict[str, float] = {"step": float(step)}
        updates: list[PendingUpdate] = []
        score_metrics: list[dict[str, float]] = []
        finite = True
        completed: list[dict[str, float]] = []
        clock = _Clock()
        if generator_step:
            self.generator.optimizer.zero_grad()
        for micro in range(self.layout.accumulation_steps):
            batch = self.source.batch(step, self.layout.sample_ids(micro))
            with torch.set_grad_enabled(generator_step):
                sample = self.generator.sample(batch, step)
            payload = ScorePayload(sample.video.detach(), batch.conditioning(), self.generator.meta(sample, step, batch))
            clock.lap("time_rollout")
            handle = self.client.put(payload)
            clock.lap("time_transfer")
            grad = None
            if generator_step:
                grad, sm = self.client.score(step, handle)
                score_metrics.append(sm)
                finite = finite and bool(torch.isfinite(grad).all())
                clock.lap("time_score")
            updates.append(self.client.update(step, handle))
            # The previous step's update has run by now (this step was scored after it): collect it.
            completed.extend(self._complete_in_flight())
            clock.lap("time_update_wait")
            if grad is not None:
                self.generator.backward(sample, grad)
                clock.lap("time_backward")
            del sample
        if generator_step:
            metrics.update(_mean(score_metrics))
            gen = self.generator.finish_step(step, loss=None if finite else float("nan"))
            clock.lap("time_optimizer")
            metrics.update(gen)
            if gen["generator_skipped"]:
                self.state.skipped_generator_steps += 1
            else:
                self.state.generator_steps += 1
        self.state.step += 1
        if not self.overlap:
            for update in updates:
                update.result()
            clock.lap("time_update_wait")
        metrics.update(clock.totals)
        metrics["time_step"] = clock.elapsed
        self._in_flight = _InFlight(step, metrics, updates)
        if not self.overlap:
            completed.extend(self._complete_in_flight())
        return completed

    def flush(self) -> list[dict[str, float]]:
        """Wait for the last step's update and return its record (call before checkpoints and at the end)."""
        return self._complete_in_flight()

    def _complete_in_flight(self) -> list[dict[str, float]]:
        flight, self._in_flight = self._in_flight, None
        if flight is None:
            return []
        critic = [u.result() for u in flight.updates]
        update = critic[0]  # one update per step: every payload of the step reports the same one
        record = dict(flight.metrics)
        record.update(update)
        critic_skipped = any(v for k, v in update.items() if k.endswith("_skipped"))
        if critic_skipped:
            self.state.skipped_critic_steps += 1
        else:
            self.state.critic_steps += 1
        if critic_skipped or flight.metrics.get("generator_skipped", 0.0):
            self.state.consecutive_skipped_steps += 1
        else:
            self.state.consecutive_skipped_steps = 0
        record.update({k: float(v) for k, v in asdict(self.state).items() if k != "step"})
        return [record]

    def run(self, num_steps: int) -> Iterator[dict[str, float]]:
        """Train until ``state.step == num_steps``, yielding each step's record once it is complete."""
        while self.state.step < num_steps:
            yield from self.train_step()
        yield from self.flush()


class _Clock:
    """Seconds per phase of a step (reported as metrics: where a step's time goes)."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.totals: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.totals[name] = self.totals.get(name, 0.0) + now - self.last
        self.last = now

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def _mean(dicts: list[dict[str, float]]) -> dict[str, float]:
    if not dicts:
        return {}
    return {k: sum(d[k] for d in dicts) / len(dicts) for k in dicts[0]}
