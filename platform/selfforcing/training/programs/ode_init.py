"""ODE initialisation as a step program: the block-causal student (starting from the teacher's weights)
regressed onto the teacher's ODE trajectories (``objectives.ode_regression_loss``, SPEC section 5).

Trajectories come from an ``ode_trajectories`` dataset (``jobs/ode_pairs.py``), read by row index: sample
i of step k is row ``SampleOrder.index(k, i)`` (each pass a fresh permutation), and which recorded state
each of its chunks sees is drawn from a generator seeded by (seed, k, i). The dataset's timesteps must be
the generator's denoising steps of the job's platform, which is checked before the first step.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ...config import PlatformConfig
from ...forcing import sample_generators
from ...objectives.ode_regression import draw_state_indices, ode_regression_loss
from ..batches import SampleOrder, _check_text_dims, _pad_text
from ..ema import EMA
from ..local import TrainState
from ..loop import LoopContext, TrainedNetwork
from ..reporting import write_sample_video
from ..supervised_config import ODEInitJobConfig
from .supervised import SupervisedProgram

STATE_STREAM = 23  # sample_seed stream of the per-sample state draws


class TrajectorySource:
    """Teacher ODE trajectories by (step, sample index), checked against the student's platform."""

    def __init__(self, platform: PlatformConfig, path: str, batch_size: int, seed: int = 0) -> None:
        from ...data.indexed import IndexedRows
        from ...data.pipelines.ode_pairs import generator_timesteps

        self.rows = IndexedRows(path, "ode_trajectories")
        self.text_len = platform.model.text_len
        grids = {tuple(round(float(t), 4) for t in ts) for ts in self.rows.column("timesteps")}
        wanted = tuple(round(float(t), 4) for t in generator_timesteps(platform))
        if grids != {wanted}:
            raise ValueError(
                f"the trajectories in {path!r} were recorded at timesteps {sorted(grids)}, but the student's "
                f"denoising steps (platform.schedule) are {list(wanted)}: record them with the same preset"
            )
        k = platform.video.frames_per_chunk
        shapes = {tuple(int(d) for d in s) for s in self.rows.column("target_shape")}
        bad = sorted(s for s in shapes if len(s) != 4 or s[0] % k or s[1] != platform.model.in_dim)
        if bad:
            raise ValueError(
                f"trajectory targets in {path!r} have shapes {bad}; the student needs [F, model.in_dim="
                f"{platform.model.in_dim}, h, w] with F a multiple of video.frames_per_chunk={k}"
            )
        _check_text_dims({int(s[-1]) for s in self.rows.column("embedding_shape")}, platform, path)
        self.order = SampleOrder(len(self.rows), batch_size, seed)

    def batch(self, step: int, sample_ids: Sequence[int]):
        """An ``ODEBatch`` (states [B, K, F, C, h, w], timesteps [K], target, text [B, text_len, D])."""
        from ...data.batches import ode_batch

        b = ode_batch(self.rows.take([self.order.index(step, int(i)) for i in sample_ids]))
        b.text = _pad_text(b.text, self.text_len, "trajectory embeddings")
        return b


class ODEInitProgram(SupervisedProgram):
    """Regression steps of the causal student on teacher trajectories."""

    kind = "ode_init"

    job: ODEInitJobConfig

    def start(self, ctx: LoopContext, net: TrainedNetwork, ema: EMA, state: TrainState) -> None:
        t = self.job.training
        self.source = TrajectorySource(self.job.platform, self.job.data.path, t.batch_size, self.job.data.seed)
        self.start_steps(ctx, net, ema, state)

    def loss(self, step: int, sample_ids: Sequence[int]) -> tuple[torch.Tensor, dict[str, float]]:
        t, platform = self.job.training, self.job.platform
        b = self.source.batch(step, sample_ids)
        p = next(self.net.model.parameters())
        k = platform.video.frames_per_chunk
        chunks, num_states = b.states.shape[2] // k, b.states.shape[1]
        idx = torch.cat([draw_state_indices(1, chunks, num_states, g, t.shared_across_chunks)
                         for g in sample_generators(t.seed, step, sample_ids, STATE_STREAM)])
        loss, metrics = ode_regression_loss(
            self.net.runner, b.states.to(p.device, p.dtype), b.timesteps, b.target.to(p.device, p.dtype),
            b.text.to(p.device, p.dtype), self.schedule, k, None, window_frames=platform.generation.window_frames,
            sink_frames=platform.generation.sink_frames, state_indices=idx,
        )
        return loss, metrics

    def sample_video(self, model: nn.Module, platform: PlatformConfig, path: Path) -> Path | None:
        return write_sample_video(model, platform, self.source.batch(0, [0]).text, path)
