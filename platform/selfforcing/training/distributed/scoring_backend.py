"""The Self Forcing program's scoring backend on Ray: the critic / discriminator actor group.

Rank 0 owns the group: it builds it at every (re)start of the worker group, from the same checkpoint the
workers resume from. A dead worker makes Ray Train restart the worker group, and the old group's actors
die with their owner; a dead actor fails its callers, which does the same. Either way generator and actors
restart together from one consistent step. Generator rank r talks to actor r mod num_actors.
"""

from __future__ import annotations

from pathlib import Path

from ..job_config import SelfForcingJobConfig
from ..loop import PIDS_DIR, LoopContext
from .remote_client import RemoteScoringClient
from .scoring_actor import NAMESPACE, ScoringGroup


class RayScoring:
    """``ScoringBackend`` over a ``ScoringGroup`` of actors in their own placement group."""

    def __init__(self, job: SelfForcingJobConfig) -> None:
        self.job = job
        self.group: ScoringGroup | None = None

    def start(self, ctx: LoopContext, start_step: int) -> RemoteScoringClient:
        import ray

        names = None
        if ctx.collective.rank == 0:
            resumed = ctx.resumed
            self.group = ScoringGroup(self.job, start_step, str(resumed.path) if resumed else None,
                                      checkpoint_source=resumed.source if resumed else None)
            names = self.group.names
            for i, pid in enumerate(self.group.pids()):
                (ctx.output_dir / PIDS_DIR / f"scoring_{i}.pid").write_text(str(pid))
        names = ctx.collective.broadcast(names)
        actor = ray.get_actor(names[ctx.collective.rank % len(names)], namespace=NAMESPACE)
        return RemoteScoringClient(actor)

    def save_state(self, folder: Path | None) -> None:
        if self.group is not None and folder is not None:
            self.group.save_state(str(folder))

    def export_network(self, path: Path | None) -> None:
        if self.group is not None and path is not None:
            self.group.export_network(str(path))

    def close(self) -> None:
        if self.group is not None:
            self.group.shutdown()
            self.group = None
