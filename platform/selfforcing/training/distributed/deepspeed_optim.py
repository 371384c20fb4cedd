"""``RoleOptimizer`` over a DeepSpeed engine: the roles call the same four methods as locally."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ..optim import StepOutcome


class DeepSpeedOptimizer:
    """A role's optimiser when its network is wrapped in a DeepSpeed engine (ZeRO 1/2/3).

    - ``backward(loss)`` is ``engine.backward`` (which divides by the accumulation steps); between
      accumulation boundaries it also makes DeepSpeed's micro-step, so a role calls ``step`` once per
      training step however many micro-batches it accumulated.
    - A non-finite loss is back-propagated as NaN on purpose: DeepSpeed's global-norm check (an
      all-reduce over the data-parallel group) then discards the step on *every* rank, one decision for
      the group, and ``engine.was_step_applied()`` reports it. A loss that is finite on this rank but not
      on another is caught the same way, through the other rank's gradients.
    - ``full_parameters`` gathers ZeRO-3 partitions (for the EMA and export); a no-op below stage 3.
    """

    def __init__(self, engine) -> None:
        self.engine = engine
        self.skipped = 0
        self.applied = 0
        self._pending = False

    @property
    def accumulation_steps(self) -> int:
        return int(self.engine.gradient_accumulation_steps())

    @property
    def zero_stage(self) -> int:
        return int(self.engine.zero_optimization_stage())

    def zero_grad(self) -> None:
        """DeepSpeed clears gradients after every boundary step (taken or skipped): nothing to do."""

    def backward(self, loss: torch.Tensor) -> None:
        if not bool(torch.isfinite(loss.detach()).all()):
            loss = loss * float("nan")
        if self._pending:
            self.engine.step()  # the previous micro-batch's step: no update, only DeepSpeed's counters
        self.engine.backward(loss)
        self._pending = True

    def step(self, loss: torch.Tensor | float | None = None) -> StepOutcome:
        """The boundary step over the micro-batches since the last one (``loss`` is already accounted for
        in ``backward``). Raises when the number of backward calls does not fill the accumulation."""
        if not self._pending:
            self.skipped += 1
            return StepOutcome(False, float("nan"), "no gradient")
        if not self.engine.is_gradient_accumulation_boundary():
            raise RuntimeError(
                f"step() before the gradient accumulation boundary: backward() must be called "
                f"gradient_accumulation_steps={self.engine.gradient_accumulation_steps()} times per step"
            )
        self.engine.step()
        self._pending = False
        norm = self.engine.get_global_grad_norm()
        norm = float("nan") if norm is None else float(norm)
        if self.engine.was_step_applied():
            self.applied += 1
            return StepOutcome(True, norm)
        self.skipped += 1
        return StepOutcome(False, float("nan"), "non-finite loss or gradient")

    @contextlib.contextmanager
    def full_parameters(self) -> Iterator[None]:
        if self.zero_stage < 3:
            yield
            return
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(self.engine.module.parameters()), modifier_rank=None):
            yield

    def set_lr(self, lr: float) -> None:
        """The learning rate of the next steps (ZeRO's ``param_groups`` are its AdamW's)."""
        for group in self.engine.optimizer.param_groups:
            group["lr"] = float(lr)

    def memory_footprint(self) -> dict[str, float]:
        """Bytes this rank holds for the model: parameters (its ZeRO-3 partition, or whole), the fp32
        master copy and the optimiser state (its ZeRO 1/2/3 partition). Counted, not sampled."""
        def nbytes(t: torch.Tensor) -> int:
            return t.numel() * t.element_size()

        params = 0
        for p in self.engine.module.parameters():
            params += nbytes(p.ds_tensor) if hasattr(p, "ds_tensor") else nbytes(p)
        zero = self.engine.optimizer
        masters = getattr(zero, "fp32_partitioned_groups_flat", None) or getattr(zero, "single_partition_of_fp32_groups", [])
        master = sum(nbytes(t) for t in masters)
        inner = getattr(zero, "optimizer", zero)
        state = sum(nbytes(v) for st in inner.state.values() for v in st.values() if torch.is_tensor(v))
        return {"memory_param_bytes": float(params), "memory_master_bytes": float(master),
                "memory_optimizer_bytes": float(state)}

    def state_dict(self) -> dict:
        return {"skipped": self.skipped, "applied": self.applied}

    def load_state_dict(self, state: dict) -> None:
        self.skipped, self.applied = state["skipped"], state["applied"]
