"""The networks of a training job, built from their sources: random weights, a directory, or MLflow.

A source string is ``random:<seed>`` (the same weights in every process, for tests and tiny runs), a
generator directory or a Wan2.1 / Self Forcing checkpoint path, or a ``models:/<name>@<alias>`` URI that
the registry resolves to a local directory (downloaded once per version).
"""

from __future__ import annotations

import copy

import torch

from ..config import PlatformConfig
from ..models.factory import build_dit, checkpoint_model_config, load_dit
from ..models.wan_dit import WanDiT
from ..objectives import Discriminator
from .job_config import ModelsSection


def load_network(
    source: str, platform: PlatformConfig, device: torch.device | str = "cpu", tracking_uri: str | None = None,
) -> WanDiT:
    """One DiT from ``source`` in the platform's runtime dtype on ``device`` (architecture checked
    against the platform's model section: a checkpoint of another size fails with both named).
    ``models:/`` URIs are resolved in the MLflow store ``tracking_uri`` (None: ``$MLFLOW_TRACKING_URI``)."""
    if source.startswith("random:"):
        return build_dit(platform, device=device, seed=int(source[len("random:"):]))
    from ..tracking import is_model_uri, resolve_model_source

    path = resolve_model_source(source, tracking_uri) if is_model_uri(source) else source
    config = checkpoint_model_config(path, platform)
    if config.model != platform.model:
        raise ValueError(
            f"model source {source!r} has architecture {config.model.model_dump()} but the job's platform.model "
            f"is {platform.model.model_dump()}: use a preset that matches the checkpoint"
        )
    return load_dit(config, path, device=device)


def scoring_networks(
    models: ModelsSection, platform: PlatformConfig, objective: str, num_registers: int = 1,
    device: torch.device | str = "cpu", tracking_uri: str | None = None,
) -> tuple[WanDiT | None, torch.nn.Module]:
    """(real score, trained network) of the scoring role: the frozen teacher and the fake score
    (DMD / SiD; initialised as a copy of the teacher, as in the release), or (None, discriminator)
    for GAN (the critic backbone plus a classification head)."""
    teacher = load_network(models.teacher, platform, device, tracking_uri)
    trained = (copy.deepcopy(teacher) if models.critic is None
               else load_network(models.critic, platform, device, tracking_uri))
    if objective == "gan":
        with torch.random.fork_rng(devices=[]):  # the head's init: the same in every process
            torch.manual_seed(0)
            return None, Discriminator(trained, num_registers).to(device)
    return teacher, trained
