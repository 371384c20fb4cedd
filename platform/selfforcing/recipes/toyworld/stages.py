"""A tiny stage runner: each stage writes a checkpoint directory and a ``stage.json`` marker; a stage whose
marker carries the same key is skipped (its outputs are loaded instead), so reruns and later runs resume
from the last finished stage. Every decision is appended to a JSONL stage log.

A key must name everything that made the stage (``config.config_key`` of its config, the digests of its
input checkpoints and its code version), and ``check`` may verify the outputs on a hit (their digest):
outputs changed after the marker was written are rebuilt, never reused. The marker is removed before a
build and written last, so an aborted or crashed stage is never taken for a finished one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = "stage.json"


@dataclass
class StageRecord:
    """What happened to a stage in this run: ``ran`` or ``skipped`` (cache hit), its key and outputs."""

    name: str
    key: str
    status: str
    seconds: float
    path: Path
    info: dict[str, Any]


class StageRunner:
    """Runs named stages into directories; ``log_path`` receives one JSON line per stage decision."""

    def __init__(self, log_path: Path, quiet: bool = False) -> None:
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.quiet = quiet
        self.records: list[StageRecord] = []

    @staticmethod
    def done(path: Path, key: str) -> dict[str, Any] | None:
        """The marker's info when ``path`` holds a finished stage with this key, else None."""
        marker = Path(path) / MARKER
        if not marker.exists():
            return None
        saved = json.loads(marker.read_text())
        return saved.get("info", {}) if saved.get("key") == key else None

    def run(
        self, name: str, key: str, path: Path, build: Callable[[Path], dict[str, Any]],
        check: Callable[[Path, dict[str, Any]], bool] | None = None,
    ) -> StageRecord:
        """Run ``build(path)`` (which writes the stage's files and returns JSON-able info) unless done.

        ``check(path, info)`` is asked on a cache hit; False (outputs changed since) rebuilds the stage.
        """
        path = Path(path)
        start = time.perf_counter()
        info = self.done(path, key)
        if info is not None and check is not None and not check(path, info):
            self._say(f"== {name}: outputs in {path} changed since the stage finished; rebuilding")
            info = None
        if info is not None:
            status = "skipped"
            self._say(f"== {name}: cached ({path}), skipped")
        else:
            status = "ran"
            self._say(f"== {name}: running -> {path}")
            path.mkdir(parents=True, exist_ok=True)
            (path / MARKER).unlink(missing_ok=True)
            info = build(path)
            tmp = path / (MARKER + ".tmp")
            tmp.write_text(json.dumps({"key": key, "info": info}, indent=1))
            tmp.replace(path / MARKER)
        record = StageRecord(name, key, status, time.perf_counter() - start, path, info)
        self.records.append(record)
        self._log(record)
        if status == "ran":
            self._say(f"== {name}: done in {record.seconds:.1f}s")
        return record

    def record(self, name: str, key: str, status: str, path: Path, info: dict[str, Any]) -> StageRecord:
        """Log a stage that was provided rather than run or cached (the shipped teacher: ``released``)."""
        record = StageRecord(name, key, status, 0.0, Path(path), info)
        self.records.append(record)
        self._log(record)
        self._say(f"== {name}: {status} ({path})")
        return record

    def _log(self, record: StageRecord) -> None:
        with self.log_path.open("a") as f:
            f.write(json.dumps({"stage": record.name, "key": record.key, "status": record.status,
                                "seconds": round(record.seconds, 3), "path": str(record.path)}) + "\n")

    def _say(self, message: str) -> None:
        if not self.quiet:
            print(message, flush=True)
