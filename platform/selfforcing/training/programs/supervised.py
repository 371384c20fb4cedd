"""The step of every supervised program: a loss over this rank's micro-batches, one guarded optimiser step.

A program gives ``loss(step, sample_ids) -> (mean loss over those samples, metrics)``, a pure function of
the step and the samples' global indices (its draws come from ``forcing.sample_generators``). Each
micro-batch's mean is back-propagated (the optimiser divides by the accumulation steps, data parallelism
averages over ranks), so a step applies the gradient of the mean loss over the global batch on any number
of workers. The learning rate is set from the step number before each update; a non-finite loss on any
micro-batch skips the whole step (on every rank alike under DeepSpeed) and is counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from ...diffusion.schedule import FlowMatchSchedule
from ..ema import EMA
from ..local import TrainState
from ..loop import LoopContext, TrainedNetwork
from ..networks import load_network
from ..supervised_config import LRSchedule
from ..worker import BatchLayout

LossFn = Callable[[int, Sequence[int]], tuple[torch.Tensor, dict[str, float]]]


class SupervisedSteps:
    """Steps of one rank of a supervised program."""

    def __init__(
        self, net: TrainedNetwork, ema: EMA, state: TrainState, layout: BatchLayout, loss: LossFn,
        base_lr: float, schedule: LRSchedule, max_steps: int,
    ) -> None:
        self.net, self.ema, self.state, self.layout, self.loss = net, ema, state, layout, loss
        self.base_lr, self.schedule, self.max_steps = base_lr, schedule, max_steps

    def lr(self, step: int) -> float:
        return self.base_lr * self.schedule.factor(step, self.max_steps)

    def train_step(self) -> list[dict[str, float]]:
        start = time.perf_counter()
        step, opt = self.state.step, self.net.optimizer
        lr = self.lr(step)
        opt.set_lr(lr)
        opt.zero_grad()
        parts: list[dict[str, float]] = []
        finite = True
        for micro in range(self.layout.accumulation_steps):
            loss, metrics = self.loss(step, self.layout.sample_ids(micro))
            finite = finite and bool(torch.isfinite(loss.detach()).all())
            opt.backward(loss)
            parts.append(metrics)
        outcome = opt.step(None if finite else float("nan"))
        if outcome.applied:
            with opt.full_parameters():
                self.ema.update(self.net.model, step)
            self.state.generator_steps += 1
            self.state.consecutive_skipped_steps = 0
        else:
            self.state.skipped_generator_steps += 1
            self.state.consecutive_skipped_steps += 1
        self.state.step += 1
        record = {"step": float(step), **{k: sum(p[k] for p in parts) / len(parts) for k in parts[0]},
                  "generator_grad_norm": outcome.grad_norm, "generator_skipped": float(not outcome.applied),
                  "lr": lr, "time_step": time.perf_counter() - start}
        record.update({k: float(v) for k, v in asdict(self.state).items() if k != "step"})
        return [record]

    def flush(self) -> list[dict[str, float]]:
        return []


class SupervisedProgram:
    """What the teacher and ODE-init programs share: the network from ``models.init``, the flow-matching
    schedule, one ``SupervisedSteps`` per rank over the program's ``loss``, and no state of their own
    beside the network (nothing to flush, save, finish or close)."""

    def __init__(self, job) -> None:
        self.job = job
        self.optim, self.ema = job.training.optim, job.training.ema
        sched = job.platform.schedule
        self.schedule = FlowMatchSchedule(sched.num_train_timesteps, sched.shift)

    def build_network(self, device: torch.device) -> nn.Module:
        return load_network(self.job.models.init, self.job.platform, device, self.job.tracking.tracking_uri)

    def start_steps(self, ctx: LoopContext, net: TrainedNetwork, ema: EMA, state: TrainState) -> None:
        t = self.job.training
        self.net = net
        self.steps = SupervisedSteps(net, ema, state, ctx.layout, self.loss, t.optim.lr, t.lr_schedule, t.max_steps)

    def loss(self, step: int, sample_ids: Sequence[int]) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def train_step(self) -> list[dict[str, float]]:
        return self.steps.train_step()

    def flush(self) -> list[dict[str, float]]:
        return []

    def save_state(self, folder: Path | None) -> None:
        return None

    def finish(self, folder: Path | None) -> None:
        return None

    def close(self) -> None:
        return None
