"""A scoring role served to several generator workers: one optimiser step per training step.

The critic (or discriminator) actor of the distributed job hosts one ``ScoringService``. Each generator
worker it serves sends, per step and per micro-batch, one ``ScorePayload`` (the detached sample, its
conditioning and ``SampleMeta``); on generator steps it first asks for dL/dx (``score``), then hands the
same payload to the update (``add``). The service waits until every payload of the step has arrived and
then takes **one** optimiser step over all of them, as ``LocalTrainer``'s critic does over the global
batch. Plain Python, so it is tested in-process; ``distributed.scoring_actor`` is the Ray edge.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..objectives import Conditioning, SampleMeta, ScoreResult
from .local import ScoringRole

SCORING_PREFIX = "scoring"  # checkpoint files of the trained scoring network: scoring.safetensors, scoring_optim.pt
SCORING_COUNTERS = "scoring_counters.json"  # its optimiser's counters and the last updated step


@dataclass
class ScorePayload:
    """What a generator worker sends a scoring actor once per (step, micro-batch) through the object
    store: the detached sample x [B, F, C, h, w], its conditioning and metadata (step, sample ids)."""

    x: torch.Tensor
    cond: Conditioning
    meta: SampleMeta

    def __post_init__(self) -> None:
        if not self.meta.identified:
            raise ValueError("a ScorePayload needs meta.step and meta.sample_ids (per-sample draws depend on them)")
        if len(self.meta.sample_ids) != self.x.shape[0]:
            raise ValueError(f"{len(self.meta.sample_ids)} sample ids for {self.x.shape[0]} samples")


def _cat(values: list[torch.Tensor | None]) -> torch.Tensor | None:
    if all(v is None for v in values):
        return None
    if any(v is None for v in values):
        raise ValueError("payloads of one step disagree on which conditioning tensors they carry")
    return torch.cat(values)


def merge_payloads(payloads: list[ScorePayload]) -> ScorePayload:
    """One payload over several, ordered by sample id (the order of the global batch)."""
    payloads = sorted(payloads, key=lambda p: p.meta.sample_ids[0])
    steps = {p.meta.step for p in payloads}
    if len(steps) != 1:
        raise ValueError(f"payloads of different steps cannot be merged: {sorted(steps)}")
    first = payloads[0].meta
    meta = SampleMeta(
        grad_mask=_cat([p.meta.grad_mask for p in payloads]), t_from=first.t_from, t_to=first.t_to,
        step=first.step, sample_ids=tuple(i for p in payloads for i in p.meta.sample_ids),
    )
    cond = Conditioning(
        _cat([p.cond.text for p in payloads]), _cat([p.cond.negative_text for p in payloads]),
        _cat([p.cond.real_latents for p in payloads]),
    )
    return ScorePayload(torch.cat([p.x for p in payloads]), cond, meta)


class ScoringService:
    """Collects a step's payloads from ``payloads_per_step`` senders and updates once per step.

    ``updated_through`` is the last step whose update is applied: scoring for step k must see the
    weights after update k-1 and no later, which the Ray edge enforces by waiting on it.
    """

    def __init__(self, role: ScoringRole, payloads_per_step: int, start_step: int = 0) -> None:
        if payloads_per_step < 1:
            raise ValueError(f"payloads_per_step={payloads_per_step} must be >= 1")
        self.role = role
        self.payloads_per_step = payloads_per_step
        self.updated_through = start_step - 1
        self._pending: dict[int, list[ScorePayload]] = {}
        self.results: dict[int, dict[str, float]] = {}

    def score(self, payload: ScorePayload) -> ScoreResult:
        """dL/dx for one payload with the current weights."""
        step = payload.meta.step
        if step != self.updated_through + 1:
            raise RuntimeError(
                f"scoring step {step} needs the weights after step {step - 1}'s update; "
                f"updates are applied through step {self.updated_through}"
            )
        return self.role.score_gradient(payload.x, payload.cond, payload.meta)

    def add(self, payload: ScorePayload) -> bool:
        """Queue a payload for its step's update; True when the step has all of its payloads."""
        step = payload.meta.step
        if step <= self.updated_through:
            raise RuntimeError(f"step {step} is already updated (through {self.updated_through})")
        queue = self._pending.setdefault(step, [])
        queue.append(payload)
        if len(queue) > self.payloads_per_step:
            raise RuntimeError(f"step {step} got {len(queue)} payloads, expected {self.payloads_per_step}")
        return len(queue) == self.payloads_per_step

    def ready(self, step: int) -> bool:
        return len(self._pending.get(step, ())) == self.payloads_per_step and step == self.updated_through + 1

    def run_update(self, step: int) -> dict[str, float]:
        """The one optimiser step of ``step`` over all of its payloads; returns its metrics."""
        if not self.ready(step):
            raise RuntimeError(
                f"step {step} is not ready: {len(self._pending.get(step, ()))}/{self.payloads_per_step} "
                f"payloads, updates applied through {self.updated_through}"
            )
        start = time.perf_counter()
        merged = merge_payloads(self._pending.pop(step))
        metrics = self.role.update(merged.x, merged.cond, meta=merged.meta)
        metrics["time_critic_update"] = time.perf_counter() - start
        self.updated_through = step
        self.results[step] = metrics
        return metrics
