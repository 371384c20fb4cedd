"""Whole-trainer checkpoints on disk: atomic, verified, pruned.

A checkpoint is a folder ``step_<8 digits>`` under ``<storage>/<run>/checkpoints``. Its writers put files
into a hidden staging folder; ``commit`` then writes ``manifest.json`` (every file's size and sha256),
fsyncs, renames the folder into place and finally writes the ``COMPLETE`` mark. A reader trusts only
folders with the mark whose files match the manifest; anything else (a crash mid-write, a truncated file,
a folder a crashed run left behind) is skipped with a warning naming it, and the previous complete
checkpoint is used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

COMPLETE = "COMPLETE"
MANIFEST = "manifest.json"
CHECKPOINT_DIR = "checkpoints"  # <run folder>/checkpoints/step_<8 digits>
_NAME = re.compile(r"^step_(\d{8})$")


def folder_step(name: str) -> int | None:
    """The step of a checkpoint folder's name (``step_00000042`` -> 42), None for any other name."""
    m = _NAME.match(name)
    return int(m.group(1)) if m else None


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used, with the reason."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Checkpoint:
    """A complete, verified checkpoint: its folder and the step count it holds (steps done). ``source``:
    the remote folder (a pyarrow.fs URI) it came from when the run's storage is a URI, so a process on
    another node can download it (``run_storage.ensure_local``); None for a local storage."""

    path: Path
    step: int
    source: str | None = None

    def file(self, name: str) -> Path:
        return self.path / name


class CheckpointStore:
    """The checkpoints of one run."""

    def __init__(self, root: str | Path, num_to_keep: int = 2) -> None:
        if num_to_keep < 1:
            raise ValueError(f"num_to_keep={num_to_keep} must be >= 1")
        self.root = Path(root)
        self.num_to_keep = num_to_keep

    # ------------------------------------------------------------------ writing
    def stage(self, step: int) -> Path:
        """A fresh hidden folder to write checkpoint ``step``'s files into."""
        path = self.root / f".staging-step_{step:08d}-{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        return path

    def commit(self, staging: Path, step: int) -> Checkpoint:
        """Manifest, fsync, rename into place, completion mark; then prune old checkpoints."""
        files = sorted(p for p in staging.rglob("*") if p.is_file())
        manifest = {str(p.relative_to(staging)): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files}
        for p in files:
            with p.open("rb") as f:
                os.fsync(f.fileno())
        (staging / MANIFEST).write_text(json.dumps({"step": step, "files": manifest}, indent=1))
        _fsync_dir(staging)
        final = self.root / f"step_{step:08d}"
        if final.exists():  # a stale, incomplete folder of the same step (a crash before its mark)
            shutil.rmtree(final)
        staging.rename(final)
        _fsync_dir(self.root)
        mark = final / COMPLETE
        mark.write_text(str(step))
        with mark.open("rb") as f:
            os.fsync(f.fileno())
        _fsync_dir(final)
        self.prune()
        return Checkpoint(final, step)

    def prune(self) -> None:
        """Keep the newest ``num_to_keep`` complete checkpoints; drop older ones and leftovers."""
        complete = [c for c in self._candidates() if (c[1] / COMPLETE).exists()]
        keep = {p for _, p in complete[-self.num_to_keep:]}
        newest = complete[-1][0] if complete else -1
        for step, path in self._candidates():
            if path in keep:
                continue
            if (path / COMPLETE).exists() or step < newest:
                shutil.rmtree(path, ignore_errors=True)
        self.clean_staging()

    def clean_staging(self) -> list[Path]:
        """Remove staging folders (writes a crashed process never committed); returns what it removed."""
        removed = []
        if self.root.exists():
            for path in self.root.glob(".staging-*"):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed

    # ------------------------------------------------------------------ reading
    def _candidates(self) -> list[tuple[int, Path]]:
        if not self.root.exists():
            return []
        out = [(int(m.group(1)), p) for p in self.root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
        return sorted(out)

    def verify(self, path: Path) -> Checkpoint:
        """The checkpoint at ``path`` if it is complete and every file matches its manifest."""
        if not (path / COMPLETE).exists():
            raise CheckpointError(f"checkpoint {path} has no {COMPLETE} mark (its write never finished)")
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {path}: unreadable {MANIFEST} ({exc})") from None
        for name, entry in manifest["files"].items():
            f = path / name
            if not f.exists():
                raise CheckpointError(f"checkpoint {path}: {name} is missing")
            if f.stat().st_size != entry["size"]:
                raise CheckpointError(
                    f"checkpoint {path}: {name} has {f.stat().st_size} bytes, the manifest says {entry['size']}"
                )
            if _sha256(f) != entry["sha256"]:
                raise CheckpointError(f"checkpoint {path}: {name} does not match its sha256 in the manifest")
        return Checkpoint(path, int(manifest["step"]))

    def latest(self) -> Checkpoint | None:
        """The newest usable checkpoint; each unusable newer one is logged (and skipped)."""
        for _, path in reversed(self._candidates()):
            try:
                return self.verify(path)
            except CheckpointError as err:
                log.warning("skipping checkpoint: %s", err)
        return None

    def complete_steps(self) -> list[int]:
        return [s for s, p in self._candidates() if (p / COMPLETE).exists()]
