"""A DeepSpeed engine's weights and AdamW state, consolidated by parameter name, and back.

Saved this way a checkpoint does not depend on the layout that wrote it: a run saved by 2 workers at
ZeRO-2 resumes on 1 worker at ZeRO-3 (or 8 at ZeRO-1) with the same fp32 master weights and the same
optimiser moments, which is what makes an elastic resume compute what an uninterrupted run computes.
DeepSpeed's tensor-fragment API (``safe_get_full_*`` / ``safe_set_full_*``) maps names to partitions for
every ZeRO stage; under ZeRO 2/3 its calls are collectives, so every rank of the group calls these
functions in the same order (only one rank needs to keep the result).
"""

from __future__ import annotations

import torch

from ..engine_state import OPTIMIZER_KEYS, EngineState, load_weights, read_state, save_state

__all__ = ["EngineState", "consolidate", "load_optimizer", "load_weights", "read_state", "save_state"]


def _flat_partitions(zero) -> list[torch.Tensor]:
    flats = getattr(zero, "fp32_partitioned_groups_flat", None) or getattr(zero, "single_partition_of_fp32_groups", None)
    if not flats:
        raise RuntimeError(f"cannot find the fp32 partitions of {type(zero).__name__} (not a ZeRO optimiser?)")
    return list(flats)


def consolidate(engine) -> EngineState:
    """Gather the engine's state (collective under ZeRO 2/3). Tensors are fp32 on the CPU."""
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

    params: dict[str, torch.Tensor] = {}
    moments: dict[str, dict[str, torch.Tensor]] = {k: {} for k in OPTIMIZER_KEYS}
    inner = engine.optimizer.optimizer
    stepped = bool(inner.state)  # AdamW creates its state at the first applied step
    for name, p in engine.module.named_parameters():
        params[name] = safe_get_full_fp32_param(p).detach().float().cpu().clone()
        for key in OPTIMIZER_KEYS if stepped else ():
            value = safe_get_full_optimizer_state(p, key)
            if value is not None:
                moments[key][name] = value.detach().float().cpu().clone()
    steps = [int(s["step"]) for s in inner.state.values() if "step" in s]
    return EngineState(params, {k: v for k, v in moments.items() if v}, max(steps, default=0))


def load_optimizer(engine, state: EngineState) -> None:
    """Give the engine's AdamW the saved moments and step count (collective under ZeRO 2/3)."""
    from deepspeed.utils import safe_set_full_optimizer_state

    if not state.moments:
        return  # saved before the first applied step: AdamW starts empty, as it did then
    zero = engine.optimizer
    inner = zero.optimizer
    for flat in _flat_partitions(zero):
        inner.state[flat] = {
            "step": torch.tensor(float(state.optimizer_step)),
            **{k: torch.zeros_like(flat) for k in OPTIMIZER_KEYS},
        }
    if hasattr(zero, "_lazy_init_hp_params_optimizer_state"):  # ZeRO 1/2 link fragments to state lazily
        zero._lazy_init_hp_params_optimizer_state()
    for name, p in engine.module.named_parameters():
        for key in OPTIMIZER_KEYS:
            safe_set_full_optimizer_state(p, state.moments[key][name], key)
