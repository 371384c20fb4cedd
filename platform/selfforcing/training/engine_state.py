"""A trained network's weights and AdamW state by parameter name: the layout-independent checkpoint.

Saved this way a checkpoint does not depend on what wrote it: a run saved by 2 DeepSpeed workers at ZeRO-2
resumes on 1 worker at ZeRO-3, or in one process with plain AdamW (``GuardedOptimizer``), with the same fp32
weights and optimiser moments. ``distributed.engine_state`` gathers / scatters a DeepSpeed engine's state;
``local_state`` / ``load_local_optimizer`` do the same for torch's AdamW in one process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

OPTIMIZER_KEYS = ("exp_avg", "exp_avg_sq")  # torch AdamW's per-parameter moments


@dataclass
class EngineState:
    """fp32 master weights and AdamW moments by parameter name, plus AdamW's step count."""

    params: dict[str, torch.Tensor]
    moments: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # key -> name -> tensor
    optimizer_step: int = 0


def load_weights(module: nn.Module, state: EngineState) -> None:
    """Put the saved weights into the plain module (before ``deepspeed.initialize``, which builds its fp32
    master copy and partitions from the module)."""
    missing = set(dict(module.named_parameters())) - set(state.params)
    if missing:
        raise KeyError(f"checkpoint lacks parameters {sorted(missing)[:5]}... of {type(module).__name__}")
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(state.params[name].to(p.dtype))


def save_state(state: EngineState, folder: str | Path, prefix: str) -> None:
    """``<prefix>.safetensors`` (weights) and ``<prefix>_optim.pt`` (moments, step) in ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    save_file({k: v.contiguous() for k, v in state.params.items()}, str(folder / f"{prefix}.safetensors"))
    torch.save({"moments": state.moments, "optimizer_step": state.optimizer_step}, folder / f"{prefix}_optim.pt")


def read_state(folder: str | Path, prefix: str) -> EngineState:
    from safetensors.torch import load_file

    folder = Path(folder)
    params = load_file(str(folder / f"{prefix}.safetensors"))
    optim = torch.load(folder / f"{prefix}_optim.pt", weights_only=True)
    return EngineState(params, optim["moments"], int(optim["optimizer_step"]))


def local_state(module: nn.Module, optimizer: torch.optim.Optimizer) -> EngineState:
    """The state of ``module`` trained in this process by torch's AdamW ``optimizer`` (fp32, CPU)."""
    params: dict[str, torch.Tensor] = {}
    moments: dict[str, dict[str, torch.Tensor]] = {k: {} for k in OPTIMIZER_KEYS}
    steps = []
    for name, p in module.named_parameters():
        params[name] = p.detach().float().cpu().clone()
        st = optimizer.state.get(p, {})
        for key in OPTIMIZER_KEYS:
            if key in st:
                moments[key][name] = st[key].detach().float().cpu().clone()
        if "step" in st:
            steps.append(int(st["step"]))
    return EngineState(params, {k: v for k, v in moments.items() if v}, max(steps, default=0))


def load_local_optimizer(module: nn.Module, optimizer: torch.optim.Optimizer, state: EngineState) -> None:
    """Give torch's AdamW the saved moments and step count of every parameter it trains."""
    if not state.moments:
        return  # saved before the first applied step: AdamW starts empty, as it did then
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for name, p in module.named_parameters():
        if id(p) not in trained:
            continue
        optimizer.state[p] = {
            "step": torch.tensor(float(state.optimizer_step)),
            **{k: state.moments[k][name].to(p.device, p.dtype).clone() for k in OPTIMIZER_KEYS},
        }
