"""The critic / discriminator actor group: scoring roles in their own processes, placement group and
``torch.distributed`` group, trained as DeepSpeed data parallel.

``ScoringHost`` builds the role on DeepSpeed engines (the trained network with ZeRO 1/2/3 and torch's
AdamW; the frozen real score plain or ZeRO-3-partitioned over the group). ``ScoringActor`` adds the
ordering that makes the distributed step equal the local one: scoring for step k waits until update k-1
is applied, and update k runs once every payload of step k has arrived (one optimiser step per training
step, over all of its callers' samples). ``ScoringGroup`` places the actors and wires their process group.

Actors may run on other nodes than generator rank 0, which owns the checkpoint folders: an actor that
lacks the checkpoint it resumes from downloads it (a URI ``run.storage_path``: ``run_storage.ensure_local``),
and one that does not see the folder it should write into returns the files to the caller instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from ...diffusion.schedule import FlowMatchSchedule
from ...objectives import ScoreResult
from ..checkpoint_store import Checkpoint
from ..job_config import SelfForcingJobConfig
from ..networks import scoring_networks
from ..optim import build_adamw
from ..roles import CriticRole, DiscriminatorRole
from ..run_storage import ensure_local
from ..scoring_service import SCORING_COUNTERS, SCORING_PREFIX, ScorePayload, ScoringService
from .deepspeed_config import build_deepspeed_config, inference_config, resolve_precision
from .deepspeed_optim import DeepSpeedOptimizer
from .engine_state import consolidate, load_optimizer, load_weights, read_state, save_state

NAMESPACE = "selfforcing"
_KEEP_RESULTS = 8  # update metrics kept per actor (callers collect theirs within a step or two)


@dataclass
class ScoringActorSpec:
    """What one actor of the group needs: the job, its index, how many payloads make a step."""

    job: SelfForcingJobConfig
    index: int
    payloads_per_step: int
    start_step: int = 0
    checkpoint: str | None = None  # folder to load the trained network and its optimiser from
    checkpoint_source: str | None = None  # its remote URI (a URI storage), downloaded when this node lacks it


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by its relative path (what an actor returns when it cannot write there)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


class ScoringHost:
    """Builds and holds the scoring role of one actor (on DeepSpeed engines)."""

    def __init__(self, spec: ScoringActorSpec) -> None:
        self.spec = spec
        self.service: ScoringService | None = None

    def address(self) -> tuple[str, int]:
        """(node IP, a free port) for the group's rendezvous; asked of the leader only."""
        import ray

        return ray.util.get_node_ip_address(), _free_port()

    def setup(self, master_addr: str, master_port: int) -> None:
        """Join the group's process group and build the role (all actors call this together)."""
        import deepspeed

        job, spec = self.spec.job, self.spec
        sc = job.scoring
        use_cuda = sc.gpus_per_actor > 0 and torch.cuda.is_available()
        device = torch.device("cuda", 0) if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(device)
        else:
            torch.set_num_threads(max(1, int(sc.cpus_per_actor)))
        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(spec.index),
                          WORLD_SIZE=str(sc.num_actors), LOCAL_RANK="0")
        deepspeed.init_distributed(
            dist_backend="nccl" if use_cuda else "gloo", init_method=f"tcp://{master_addr}:{master_port}",
            rank=spec.index, world_size=sc.num_actors, verbose=False,
        )
        training = job.training
        real, trained = scoring_networks(
            job.models, job.platform, training.objective, training.gan.num_registers, device,
            job.tracking.tracking_uri,
        )
        if spec.checkpoint and spec.checkpoint_source:
            ensure_local(Checkpoint(Path(spec.checkpoint), spec.start_step, spec.checkpoint_source))
        saved = read_state(spec.checkpoint, SCORING_PREFIX) if spec.checkpoint else None
        if saved is not None:
            load_weights(trained, saved)
        precision = resolve_precision(job.scaling.precision, use_cuda)
        per_actor = training.batch_size // sc.num_actors
        config = build_deepspeed_config(
            training.critic_optim, zero_stage=sc.zero_stage, micro_batch_size=per_actor,
            world_size=sc.num_actors, precision=precision,
        )
        engine, *_ = deepspeed.initialize(
            model=trained, optimizer=build_adamw(trained.parameters(), training.critic_optim), config=config
        )
        optimizer = DeepSpeedOptimizer(engine)
        if saved is not None:
            load_optimizer(engine, saved)
            counters = json.loads((Path(spec.checkpoint) / SCORING_COUNTERS).read_text())
            optimizer.load_state_dict(counters["optimizer"])
        sched = job.platform.schedule
        schedule = FlowMatchSchedule(sched.num_train_timesteps, sched.shift)
        if training.objective == "gan":
            role = DiscriminatorRole(
                engine, schedule, training, seed=training.seed, optimizer=optimizer, scoring_network=engine.module
            )
        else:
            if sc.real_score_zero3:
                real.requires_grad_(False)
                real = deepspeed.initialize(model=real, config=inference_config(3, precision))[0]
            elif precision == "bf16":
                real = real.to(torch.bfloat16)
            role = CriticRole(real, engine, schedule, training, seed=training.seed, optimizer=optimizer)
        self.engine = engine
        self.role = role
        self.service = ScoringService(role, spec.payloads_per_step, spec.start_step)

    def ping(self) -> int:
        return os.getpid()

    def save_state(self, folder: str | None) -> dict[str, bytes] | None:
        """Write the trained network's weights, AdamW state and counters into checkpoint ``folder``
        (actor 0 writes; every actor calls: consolidation is collective). When this node does not see
        ``folder`` (the caller's node, no shared disk) the files come back to the caller instead."""
        state = consolidate(self.engine)
        if self.spec.index != 0 or folder is None:
            return None
        if not Path(folder).is_dir():
            with tempfile.TemporaryDirectory() as tmp:
                self.save_state(tmp)
                return folder_files(Path(tmp))
        save_state(state, folder, SCORING_PREFIX)
        counters = {"optimizer": self.role.optimizer.state_dict(), "updated_through": self.service.updated_through}
        (Path(folder) / SCORING_COUNTERS).write_text(json.dumps(counters))
        return None

    def export_network(self, path: str | None) -> bytes | None:
        """Write the trained network's full fp32 state dict to ``path`` (actor 0 writes; every actor of
        the group must call this: ZeRO-3 gathers collectively); its bytes come back when this node does
        not see ``path``'s folder."""
        with self.role.optimizer.full_parameters():
            if self.spec.index == 0 and path is not None:
                state = {k: v.detach().float().cpu().clone() for k, v in self.engine.module.state_dict().items()}
                if Path(path).parent.is_dir():
                    torch.save(state, path)
                    return None
                with tempfile.TemporaryDirectory() as tmp:
                    here = Path(tmp) / Path(path).name  # torch.save names its archive after the file
                    torch.save(state, here)
                    return here.read_bytes()
        return None


class ScoringActor(ScoringHost):
    """The Ray actor (async: calls from several workers interleave; compute runs one at a time)."""

    def __init__(self, spec: ScoringActorSpec) -> None:
        super().__init__(spec)
        self._changed: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def _wait_until(self, predicate) -> None:
        cond = self._condition()
        async with cond:
            await cond.wait_for(predicate)

    async def score(self, step: int, payload: ScorePayload) -> ScoreResult:
        """dL/dx of one payload with the weights after update ``step - 1`` (waits for it)."""
        service = self.service
        await self._wait_until(lambda: service.updated_through >= step - 1)
        return service.score(payload)

    async def update(self, step: int, payload: ScorePayload) -> dict[str, float]:
        """Queue the payload; the caller that completes the step runs its one optimiser step. Every
        caller gets the step's metrics."""
        service = self.service
        if service.add(payload):
            await self._wait_until(lambda: service.updated_through >= step - 1)
            service.run_update(step)
            for old in [s for s in service.results if s <= step - _KEEP_RESULTS]:
                del service.results[old]
            cond = self._condition()
            async with cond:
                cond.notify_all()
        else:
            await self._wait_until(lambda: service.updated_through >= step)
        return service.results[step]


def placement_group_name(run_name: str) -> str:
    return f"{run_name}-scoring"


def remove_group_placement(run_name: str) -> bool:
    """Remove the scoring placement group a previous attempt of ``run_name`` left (True if there was one)."""
    from ray.util import get_placement_group
    from ray.util.placement_group import remove_placement_group

    try:
        stale = get_placement_group(placement_group_name(run_name))
    except ValueError:  # no placement group of that name
        return False
    remove_placement_group(stale)
    return True


class ScoringGroup:
    """``num_actors`` scoring actors in one placement group, joined in their own process group."""

    def __init__(
        self, job: SelfForcingJobConfig, start_step: int = 0, checkpoint: str | None = None,
        timeout_s: float = 300.0, checkpoint_source: str | None = None,
    ) -> None:
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        sc = job.scoring
        bundle = {"CPU": sc.cpus_per_actor, **({"GPU": sc.gpus_per_actor} if sc.gpus_per_actor else {})}
        # A placement group lives as long as the job that made it, not as long as the worker: the group of
        # an attempt that died (a killed rank 0) still holds its resources. It has the run's name, so the
        # next attempt removes it before placing its own.
        remove_group_placement(job.run.name)
        self.pg = placement_group(
            [dict(bundle) for _ in range(sc.num_actors)], strategy=sc.placement_strategy,
            name=placement_group_name(job.run.name),
        )
        try:
            ray.get(self.pg.ready(), timeout=timeout_s)
        except Exception as exc:
            remove_placement_group(self.pg)
            raise RuntimeError(
                f"the scoring actors' placement group ({sc.num_actors} x {bundle}) could not be placed in "
                f"{timeout_s:.0f} s: the cluster lacks the resources (scoring.num_actors, scoring.cpus_per_actor, "
                f"scoring.gpus_per_actor)"
            ) from exc
        payloads = (job.scaling.num_workers // sc.num_actors) * job.scaling.gradient_accumulation_steps
        remote = ray.remote(ScoringActor)
        tag = uuid.uuid4().hex[:8]
        self.names = [f"{job.run.name}-scoring-{i}-{tag}" for i in range(sc.num_actors)]
        self.actors = [
            remote.options(
                name=name, namespace=NAMESPACE, num_cpus=sc.cpus_per_actor, num_gpus=sc.gpus_per_actor,
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=i),
                max_concurrency=64,
            ).remote(ScoringActorSpec(job, i, payloads, start_step, checkpoint, checkpoint_source))
            for i, name in enumerate(self.names)
        ]
        addr, port = ray.get(self.actors[0].address.remote())
        ray.get([a.setup.remote(addr, port) for a in self.actors])

    def save_state(self, folder: str) -> None:
        """The group's part of a whole-trainer checkpoint, written into ``folder``."""
        import ray

        files = ray.get([a.save_state.remote(folder if i == 0 else None) for i, a in enumerate(self.actors)])[0]
        if files is not None:  # actor 0 runs on a node that does not see ``folder``
            write_files(Path(folder), files)

    def export_network(self, path: str) -> None:
        """The trained network's weights (critic / discriminator) as a state dict file."""
        import ray

        data = ray.get([a.export_network.remote(path if i == 0 else None) for i, a in enumerate(self.actors)])[0]
        if data is not None:  # actor 0 runs on a node that does not see ``path``'s folder
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(data)

    def pids(self) -> list[int]:
        import ray

        return ray.get([a.ping.remote() for a in self.actors])

    def shutdown(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        remove_placement_group(self.pg)
