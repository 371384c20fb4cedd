"""Per-stage progress lines on stdout (one line every few seconds, never a flood)."""

from __future__ import annotations

import sys
import time


class Progress:
    """Prints ``[stage] step i/n key=value ...`` at most every ``every_s`` seconds, plus the last step."""

    def __init__(self, stage: str, total: int, every_s: float = 10.0, quiet: bool = False) -> None:
        self.stage, self.total, self.every_s, self.quiet = stage, total, every_s, quiet
        self.start = time.perf_counter()
        self._last = -float("inf")

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def update(self, step: int, **values: float) -> None:
        now = time.perf_counter()
        if self.quiet or (now - self._last < self.every_s and step + 1 < self.total):
            return
        self._last = now
        items = " ".join(f"{k}={v:.4g}" for k, v in values.items())
        print(f"[{self.stage}] step {step + 1}/{self.total} {items} ({self.elapsed:.0f}s)", flush=True)

    def note(self, message: str) -> None:
        if not self.quiet:
            print(f"[{self.stage}] {message}", file=sys.stdout, flush=True)
