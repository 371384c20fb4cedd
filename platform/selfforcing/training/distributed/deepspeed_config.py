"""The DeepSpeed config of a role, built by one pure function from the typed training config.

Kept pure (a dict in, nothing imported from DeepSpeed) so it is unit-tested without processes and so the
generator workers and the critic actors build their engines the same way.
"""

from __future__ import annotations

from typing import Any, Literal

from ..config import OptimConfig

Precision = Literal["fp32", "bf16"]
ZERO_STAGES = (1, 2, 3)


def resolve_precision(precision: str, use_gpu: bool) -> Precision:
    """``auto`` -> bf16 on GPUs (the release trains in bf16), fp32 on CPUs (no fast bf16 there)."""
    if precision == "auto":
        return "bf16" if use_gpu else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision={precision!r}: allowed values are 'auto', 'fp32', 'bf16'")
    return precision  # type: ignore[return-value]


def build_deepspeed_config(
    optim: OptimConfig,
    *,
    zero_stage: int,
    micro_batch_size: int,
    gradient_accumulation_steps: int = 1,
    world_size: int = 1,
    precision: Precision = "fp32",
) -> dict[str, Any]:
    """A DeepSpeed config dict for a role trained with ``optim`` (AdamW is passed to
    ``deepspeed.initialize`` as a client optimiser, so the update is torch's AdamW, exactly as locally).

    ``gradient_clipping`` clips the global norm (DeepSpeed computes it over all ranks); a non-finite norm
    makes DeepSpeed skip the step on every rank alike, which is the guarded step of ``GuardedOptimizer``.
    ``train_batch_size`` = micro x accumulation x world: DeepSpeed checks the arithmetic.
    """
    if zero_stage not in ZERO_STAGES:
        raise ValueError(f"zero_stage={zero_stage}: allowed values are {list(ZERO_STAGES)}")
    if micro_batch_size < 1 or gradient_accumulation_steps < 1 or world_size < 1:
        raise ValueError(
            f"micro_batch_size={micro_batch_size}, gradient_accumulation_steps={gradient_accumulation_steps} "
            f"and world_size={world_size} must all be >= 1"
        )
    zero: dict[str, Any] = {
        "stage": zero_stage,
        "contiguous_gradients": True,
        "overlap_comm": False,  # gloo on CPU; NCCL runs overlap its own streams
        "reduce_bucket_size": 50_000_000,
    }
    if zero_stage == 3:
        # Gather on use and release after: the generator calls the model many times per step.
        zero.update({"stage3_prefetch_bucket_size": 50_000_000, "stage3_param_persistence_threshold": 100_000})
    return {
        "train_batch_size": micro_batch_size * gradient_accumulation_steps * world_size,
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "gradient_clipping": float(optim.max_grad_norm or 0.0),
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": False},
        # The optimiser is torch's AdamW (a client optimiser); ZeRO wraps it.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


def inference_config(zero_stage: int, precision: Precision = "fp32") -> dict[str, Any]:
    """A ZeRO-3 (or plain) engine for a frozen network such as the real score: its weights are
    partitioned over the group and gathered layer by layer on use, so a 14B teacher fits beside a critic."""
    return {
        "train_micro_batch_size_per_gpu": 1,
        "zero_optimization": {"stage": zero_stage, "stage3_param_persistence_threshold": 100_000},
        "bf16": {"enabled": precision == "bf16"},
        "steps_per_print": 2**31 - 1,
    }
