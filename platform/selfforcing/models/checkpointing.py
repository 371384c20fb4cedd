"""Exact activation checkpointing of WanDiT blocks, also when a chunk attends to a KV cache.

Non-reentrant ``torch.utils.checkpoint`` drops a block's activations in the forward and reruns the block
in backward from its saved inputs. The recomputation is exact only if everything the block reads holds
the same values in backward as in the forward. Three things a cached Self Forcing chunk reads do not by
themselves, and this module (with ``WanDiT.forward``) makes each one hold:

1. **The cache's earlier frames.** After a chunk's forward, later chunks keep writing the cache; a rolling
   cache overwrites the oldest ring slots in place, so a naive recomputation attends to frames the chunk
   never saw (a silently wrong gradient). A ``PinnedContext`` holds *views* of exactly the slots the chunk
   attended to, in the same order as ``KVCache.context``. Every write through WanDiT first asks the
   cache's ``CachePins`` to copy out the pinned slots it is about to overwrite (copy-on-write, one copy
   per written run and layer, shared by every pin that covers it). A full cache in a Self Forcing rollout
   never rewrites earlier frames, so it costs no copy; a rolling cache copies each evicted frame once
   per layer while a pin on it is alive. Pins die with the autograd graph (the registry holds weak
   references), and so do the copies.
2. **The cache itself.** The recomputation must not write the chunk's keys into the cache again (by
   then the slots hold the clean context pass, or a later frame). ``ReplayFlag`` is set by checkpoint's
   recompute context, and the attention closure skips the write while it is set, so backward leaves the
   cache exactly as the rollout left it.
3. **The prompt tokens** (``WanDiT.forward``): the text embedding is computed once per call, before the
   block loop, not lazily inside block 0's checkpointed region (whose recomputation then found it
   already computed and saved fewer tensors: checkpoint's "different number of tensors" error).

With these, every recomputed op sees bit-identical inputs and runs the same kernel, so the recomputed
activations equal the forward's and the gradients equal those without checkpointing (fp64 CPU: ~1e-16).
A write that bypasses WanDiT (``KVCache.keep_rows``, assigning into ``cache.k``) cannot be guarded; the
buffers' autograd version counters detect it and the recomputation raises instead of going wrong.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from .kv_cache import CacheStep, KVCache


class ReplayFlag:
    """True while checkpoint recomputes a block of the call that made this flag (one per forward call)."""

    def __init__(self) -> None:
        self.active = False

    @contextlib.contextmanager
    def _replaying(self) -> Iterator[None]:
        self.active = True
        try:
            yield
        finally:  # also when checkpoint stops the recomputation early (it raises inside the block)
            self.active = False

    def context_fn(self) -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
        """``checkpoint(context_fn=...)``: nothing around the forward, the flag around the recomputation."""
        return contextlib.nullcontext(), self._replaying()


def checkpoint_block(block: Callable[..., torch.Tensor], x: torch.Tensor, *args, replay: ReplayFlag) -> torch.Tensor:
    """Run ``block(x, *args)`` keeping only its inputs; it reruns in backward with ``replay`` set."""
    return checkpoint(block, x, *args, use_reentrant=False, context_fn=replay.context_fn)


@dataclass
class _Segment:
    """Part of a pinned context: a view of buffer tokens [lo, hi) while ``buffers`` (the cache's k and v
    tensors it views) is set, else a private copy made before those tokens were overwritten."""

    lo: int
    hi: int
    k: torch.Tensor  # [B, hi - lo, H, D]
    v: torch.Tensor
    buffers: tuple[torch.Tensor, torch.Tensor] | None

    def part(self, a: int, b: int) -> _Segment:
        """The sub-segment over tokens [a, b), still a view."""
        i, j = a - self.lo, b - self.lo
        return _Segment(a, b, self.k[:, i:j], self.v[:, i:j], self.buffers)


class PinnedContext:
    """Keys/values [B, L, H, D] of the earlier frames one chunk attended to in one layer, as at forward time."""

    def __init__(self, owner: CachePins, layer: int, segments: list[_Segment]) -> None:
        self.owner = owner
        self.layer = layer
        self.segments = segments

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The pinned keys and values (None when the chunk had no earlier frames)."""
        if not self.segments:
            return None
        for seg in self.segments:
            if seg.buffers is not None:
                self.owner.check_unchanged(*seg.buffers)
        if len(self.segments) == 1:
            return self.segments[0].k, self.segments[0].v
        return torch.cat([s.k for s in self.segments], dim=1), torch.cat([s.v for s in self.segments], dim=1)

    def preserve(self, buffer: torch.Tensor, lo: int, hi: int, copy: _SharedCopy) -> None:
        """Before buffer tokens [lo, hi) are overwritten, replace the live views over them by copies.

        ``copy(rows)`` returns the (shared) copies of the whole written range for the first ``rows`` rows.
        """
        out: list[_Segment] = []
        for seg in self.segments:
            a, b = max(seg.lo, lo), min(seg.hi, hi)
            if seg.buffers is None or seg.buffers[0] is not buffer or a >= b:
                out.append(seg)  # already a copy, a view of a buffer no longer written, or untouched
                continue
            k, v = copy(seg.k.shape[0])
            if seg.lo < a:
                out.append(seg.part(seg.lo, a))
            out.append(_Segment(a, b, k[:, a - lo : b - lo], v[:, a - lo : b - lo], None))
            if b < seg.hi:
                out.append(seg.part(b, seg.hi))
        self.segments = out


class _SharedCopy:
    """Copies of buffer tokens [lo, hi) of one layer, made on first request and shared by every pin."""

    def __init__(self, cache: KVCache, layer: int, lo: int, hi: int) -> None:
        self.cache, self.layer, self.lo, self.hi = cache, layer, lo, hi
        self.copies: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        if rows not in self.copies:
            index = (self.layer, slice(0, rows), slice(self.lo, self.hi))
            self.copies[rows] = (self.cache.k[index].clone(), self.cache.v[index].clone())
        return self.copies[rows]


# One registry per cache, found by the cache's id and dropped with the cache (KVCache is an unhashable
# dataclass, so a WeakKeyDictionary cannot hold it).
_REGISTRY: dict[int, CachePins] = {}


class CachePins:
    """The live ``PinnedContext``s of one cache and the write guard that keeps them exact."""

    def __init__(self) -> None:
        self.pins: dict[int, list[weakref.ref[PinnedContext]]] = {}
        # Version counter of each buffer after the last write this guard saw: (buffer ref, version).
        self.versions: dict[int, tuple[weakref.ref[torch.Tensor], int]] = {}

    @staticmethod
    def of(cache: KVCache, create: bool = False) -> CachePins | None:
        """The cache's registry; created when ``create`` (the first checkpointed call through it)."""
        key = id(cache)
        pins = _REGISTRY.get(key)
        if pins is None and create:
            pins = _REGISTRY[key] = CachePins()
            weakref.finalize(cache, _REGISTRY.pop, key, None)
        return pins

    # ----------------------------------------------------------------------------- pinning
    def pin(self, cache: KVCache, layer: int, step: CacheStep) -> PinnedContext:
        """Pin the frames visible to ``step``'s chunk before it, in ``KVCache.context``'s order."""
        if not step.shared:
            raise ValueError("the gradient path needs all rows at the same position")
        n = cache.active_rows
        segments = [
            _Segment(a, b, cache.k[layer, :n, a:b], cache.v[layer, :n, a:b], (cache.k, cache.v))
            for a, b in step.rows[0].context_runs
        ]
        self._record(cache)
        pinned = PinnedContext(self, layer, segments)
        self.pins.setdefault(layer, []).append(weakref.ref(pinned))
        return pinned

    # ----------------------------------------------------------------------------- the write guard
    def before_write(self, cache: KVCache, layer: int, step: CacheStep) -> None:
        """Copy out every pinned slot of ``layer`` that ``cache.write(layer, step, ...)`` will overwrite."""
        refs = [r for r in self.pins.get(layer, []) if r() is not None]
        self.pins[layer] = refs
        if not refs:
            return
        ranges = sorted({(sa, sb) for plan in step.rows for _, _, sa, sb in plan.write_runs})
        for lo, hi in ranges:
            copy = _SharedCopy(cache, layer, lo, hi)
            for r in refs:
                pinned = r()
                if pinned is not None:
                    pinned.preserve(cache.k, lo, hi, copy)

    def after_write(self, cache: KVCache) -> None:
        self._record(cache)

    def _record(self, cache: KVCache) -> None:
        for buf in (cache.k, cache.v):
            self.versions[id(buf)] = (weakref.ref(buf), buf._version)
        self.versions = {key: (ref, ver) for key, (ref, ver) in self.versions.items() if ref() is not None}

    def check_unchanged(self, *buffers: torch.Tensor) -> None:
        """Raise if a buffer was modified since the last write this guard saw (its pins may be stale)."""
        for buf in buffers:
            ref, version = self.versions.get(id(buf), (None, None))
            if ref is None or ref() is not buf or buf._version != version:
                raise RuntimeError(
                    "the KV cache was modified outside WanDiT (e.g. keep_rows or an assignment into "
                    "cache.k/v) between a checkpointed forward and its backward; the recomputation would "
                    "attend to changed keys/values. Run backward first, or disable gradient checkpointing."
                )


def guarded_write(cache: KVCache, pins: CachePins | None, layer: int, step: CacheStep, k, v) -> None:
    """``cache.write`` that first preserves pinned slots (``pins``: ``CachePins.of(cache)``, None if never
    pinned) and records the buffers' versions after it."""
    if pins is None:
        cache.write(layer, step, k, v)
        return
    pins.before_write(cache, layer, step)
    cache.write(layer, step, k, v)
    pins.after_write(cache)
