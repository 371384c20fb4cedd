"""The per-chunk DiT call under ``torch.compile``, with the KV cache kept out of the graph, and an
eager fallback.

What is compiled is ``WanBlock.forward``, once for all blocks (parameters are graph inputs, so the 30
blocks share one set of graphs). The two closures a block receives, self-attention against the KV
cache and the prompt's cached keys/values, run eagerly (``torch.compiler.disable``): they hold the
only position-dependent logic (which buffer slots a chunk writes, how long the visible prefix is).
So the graphs see the same shapes at every chunk position, a chunk's five calls and every later chunk
reuse them, and the ring cache's positions never trigger a recompile. Everything between the cache
reads and writes (norms, modulation, RoPE, projections, FFN, residual adds) is fused by the compiler.

If compiling or running the compiled code fails, the block reruns eagerly (cache writes are
idempotent: the same keys land in the same slots) and compilation is switched off for good, with a
warning; an error that eager execution raises too is the caller's and propagates unchanged.
"""

from __future__ import annotations

import logging
import types
import warnings
from collections.abc import Callable

import torch

from ..models.wan_dit import WanBlock, WanDiT

log = logging.getLogger(__name__)

COMPILE_MODES = ("none", "default", "max-autotune-no-cudagraphs")


class CompiledBlocks:
    """Compile ``model``'s blocks in place (``mode`` one of ``COMPILE_MODES``); ``restore()`` undoes it.

    ``backend`` is torch.compile's (inductor unless a test wants another). ``error`` holds why the
    compiled path was given up, if it was.
    """

    def __init__(
        self, model: WanDiT, mode: str = "default", backend: str | Callable = "inductor"
    ) -> None:
        if mode not in COMPILE_MODES:
            raise ValueError(f"runtime.compile={mode!r} is not a compile mode; valid: {list(COMPILE_MODES)}")
        self.model = model
        self.mode = mode
        self.error: str | None = None
        self.calls = 0  # block calls that ran compiled
        self._blocks: list[WanBlock] = []
        if mode == "none":
            return
        options = {} if backend != "inductor" else {"mode": None if mode == "default" else mode}
        self._compiled = torch.compile(WanBlock.forward, backend=backend, dynamic=None, **options)
        for block in model.blocks:
            block.forward = types.MethodType(self._forward, block)
            self._blocks.append(block)

    @property
    def active(self) -> bool:
        return bool(self._blocks) and self.error is None

    def _forward(self, block: WanBlock, x, e0, rope, attend, text_kv, backend: str) -> torch.Tensor:
        if self.error is None:
            try:
                out = self._compiled(
                    block, x, e0, rope, torch.compiler.disable(attend), torch.compiler.disable(text_kv), backend
                )
                self.calls += 1
                return out
            except Exception as exc:  # noqa: BLE001 - decided below by whether eager fails too
                out = WanBlock.forward(block, x, e0, rope, attend, text_kv, backend)
                self._give_up(exc)
                return out
        return WanBlock.forward(block, x, e0, rope, attend, text_kv, backend)

    def _give_up(self, exc: Exception) -> None:
        root: BaseException = exc
        while True:  # torch wraps the compiler's own error (``inner_exception``, or the cause)
            inner = getattr(root, "inner_exception", None) or root.__cause__
            if inner is None:
                break
            root = inner
        cause = f"{type(root).__name__}: {root}".strip().splitlines()[0]
        self.error = (cause if root is exc else f"{type(exc).__name__} <- {cause}")[:500]
        message = f"torch.compile of the DiT blocks failed, running eagerly from now on ({self.error})"
        log.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        self.restore()

    def restore(self) -> None:
        """The model's own (eager) forward in every block."""
        for block in self._blocks:
            del block.forward
        self._blocks = []
