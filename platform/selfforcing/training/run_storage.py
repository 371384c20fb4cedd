"""A run's folder on any pyarrow filesystem: every process works in a local folder, the remote folder is
the source of truth.

``run.storage_path`` a local path (the default): the run folder is ``<storage_path>/<run.name>`` and
``RunStorage`` only names it; every transfer is a no-op (a shared, mounted path is how the nodes of a
cluster share it). A URI (``s3://``, ``gs://``, ``abfs://``, ``hdfs://``, ``file://``: anything
``pyarrow.fs.FileSystem.from_uri`` accepts): multi-node clusters have no shared disk, so every process
works in ``<run.local_dir>/<scheme>/<host>/<path>/<run.name>`` and the remote ``<storage_path>/<run.name>``
is the truth:

- A checkpoint commits locally first (``CheckpointStore.commit``), then its files and its manifest are
  uploaded, and only then the remote ``COMPLETE`` mark: a crash mid-upload leaves an unmarked remote
  folder, which readers skip with a warning as they do locally. Remote checkpoints are pruned to
  ``num_to_keep`` by the local rule.
- The newest checkpoint is looked up remotely, downloaded next to its local place, verified against its
  manifest (sizes and sha256) and only then renamed into place; a bad one is skipped for the previous one
  with a warning naming its URI.
- Every other process that reads a checkpoint (generator ranks, scoring actors) downloads it when its node
  lacks it (``ensure_local``), from the ``Checkpoint.source`` URI rank 0 found it at.
- The run's records are mirrored by name: ``push`` makes the remote entry (a file or a folder) equal to
  the local one, removing it when the local one is gone; ``pull`` does the opposite.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoint_store import (
    CHECKPOINT_DIR,
    COMPLETE,
    MANIFEST,
    Checkpoint,
    CheckpointError,
    CheckpointStore,
    folder_step,
)
from .storage_uri import check_reachable, child_uri, is_uri, join, local_mirror, open_filesystem, redact

if TYPE_CHECKING:
    from ..config.job import RunConfig

log = logging.getLogger(__name__)

DEFAULT_LOCAL_DIR = "~/.cache/selfforcing/runs"  # run.local_dir when unset
RESUME_DIR = "resume_from"  # <local run folder>/resume_from/<name>: a checkpoint.resume_from URI, downloaded
_BLOCK = 1 << 22  # bytes per read / write of a transfer


# ---------------------------------------------------------------------- transfers
def _download(fs: Any, src: str, dst: Path) -> None:
    """One file, written beside ``dst`` and renamed into place (a reader never sees half a file)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    part = dst.with_name(f".{dst.name}.part-{uuid.uuid4().hex[:8]}")
    try:
        with fs.open_input_stream(src) as r, part.open("wb") as w:
            shutil.copyfileobj(r, w, _BLOCK)
        os.replace(part, dst)
    finally:
        part.unlink(missing_ok=True)


def _download_tree(fs: Any, src: str, dst: Path) -> None:
    import pyarrow.fs as pafs

    prefix = src.rstrip("/") + "/"
    dst.mkdir(parents=True, exist_ok=True)
    for info in fs.get_file_info(pafs.FileSelector(src, recursive=True)):
        if info.type != pafs.FileType.File:
            continue
        if not info.path.startswith(prefix):
            raise OSError(f"listing {src} returned {info.path}, which is not inside it")
        _download(fs, info.path, dst / info.path[len(prefix):])


def _remove_local(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _same_manifest(a: Path, b: Path) -> bool:
    try:
        return (a / COMPLETE).exists() and (a / MANIFEST).read_bytes() == (b / MANIFEST).read_bytes()
    except OSError:
        return False


def _remote_matches(fs: Any, remote: str, local: Path) -> bool:
    """The local copy is of the same checkpoint (equal manifests) and the remote folder is whole: the
    mark, and every file the manifest lists at its size (one listing; other nodes download from there)."""
    import pyarrow.fs as pafs

    if not ((local / COMPLETE).exists() and (local / MANIFEST).exists()):
        return False
    try:
        with fs.open_input_stream(join(remote, MANIFEST)) as r:
            manifest = r.read()
        prefix = remote.rstrip("/") + "/"
        sizes = {i.path[len(prefix):]: i.size for i in fs.get_file_info(pafs.FileSelector(remote, recursive=True))
                 if i.type == pafs.FileType.File and i.path.startswith(prefix)}
    except OSError:
        return False
    if manifest != (local / MANIFEST).read_bytes() or COMPLETE not in sizes:
        return False
    files = json.loads(manifest)["files"]
    return all(sizes.get(name) == entry["size"] for name, entry in files.items())


def download_checkpoint(fs: Any, remote: str, uri: str, final: Path) -> Checkpoint:
    """The checkpoint folder ``remote`` (at ``uri``) as the local folder ``final``: downloaded into a
    hidden sibling (``.staging-*``, which ``CheckpointStore.clean_staging`` removes after a crash),
    verified against its manifest, then renamed into place. A local copy of the same checkpoint (a restart
    on the same node) is verified and used without downloading when the remote folder is whole. Raises
    ``CheckpointError`` naming ``uri`` when the download does not match its manifest; transfer errors
    (``OSError``) propagate."""
    verify = CheckpointStore(final.parent).verify
    if _remote_matches(fs, remote, final):
        try:
            return replace(verify(final), source=uri)
        except CheckpointError:
            pass  # a damaged local copy: download it again
    staging = final.parent / f".staging-download-{final.name}-{uuid.uuid4().hex[:8]}"
    try:
        _download_tree(fs, remote, staging)
        checked = verify(staging)
        if final.exists() and not _same_manifest(final, staging):
            shutil.rmtree(final)  # a stale local copy (another run's, or damaged): the remote is the truth
        if not final.exists():
            try:
                staging.rename(final)
            except OSError:
                if not _same_manifest(final, staging):  # else: another process here renamed the same first
                    raise
        return replace(checked, path=final, source=uri)
    except CheckpointError as err:
        raise CheckpointError(str(err).replace(str(staging), redact(uri))) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_local(checkpoint: Checkpoint) -> Checkpoint:
    """``checkpoint`` on this node: downloaded from ``checkpoint.source`` when the folder is missing here
    (another node of a cluster without shared disk). A folder with its ``COMPLETE`` mark is used as is:
    only a verified download or a local commit puts the mark there."""
    if (checkpoint.path / COMPLETE).exists():
        return checkpoint
    if checkpoint.source is None:
        if checkpoint.path.exists():
            return checkpoint  # a local storage: read errors name the files
        raise CheckpointError(
            f"checkpoint {checkpoint.path} is not on this node and has no remote copy: with a URI "
            f"run.storage_path, give checkpoint.resume_from as a URI as well"
        )
    fs, remote = open_filesystem(checkpoint.source, "checkpoint source")
    return download_checkpoint(fs, remote, checkpoint.source, checkpoint.path)


class RunStorage:
    """One run's folder: ``local`` (this node's working folder) and, for a URI storage, the remote run
    folder ``remote`` inside the pyarrow filesystem ``fs`` (the truth). See the module docstring."""

    def __init__(self, local: Path, fs: Any = None, root: str = "", name: str = "", uri: str = "") -> None:
        self.local = Path(local)
        self.fs = fs
        self.root = root  # the storage folder inside ``fs`` (run folders and ray_train/ are under it)
        self.remote = join(root, name) if fs is not None else ""
        self.uri = child_uri(uri, name) if fs is not None else ""  # the remote run folder, for messages

    @classmethod
    def for_run(cls, run: RunConfig, local: str | Path | None = None, check: bool = False) -> RunStorage:
        """The storage of ``run``; ``local``: the working folder the driver chose (workers get it passed),
        else derived from the config. ``check``: one request to the remote storage (the driver's
        early check, a ``ConfigError`` naming ``run.storage_path``)."""
        if not is_uri(run.storage_path):
            path = Path(local) if local is not None else Path(run.storage_path).expanduser().resolve() / run.name
            return cls(path)
        fs, root = open_filesystem(run.storage_path)
        if local is None:
            local = local_mirror(run.local_dir or DEFAULT_LOCAL_DIR, run.storage_path) / run.name
        storage = cls(Path(local), fs, root, run.name, run.storage_path)
        if check:
            check_reachable(fs, storage.remote, storage.uri)
        return storage

    @property
    def is_remote(self) -> bool:
        return self.fs is not None

    def path(self, *parts: str) -> str:
        """A path inside the remote run folder."""
        return join(self.remote, *parts)

    def ray_train_storage(self) -> tuple[str, Any]:
        """``(storage_path, storage_filesystem)`` for Ray Train's ``RunConfig``: ``ray_train/`` beside the
        run folders, on the run's storage."""
        if not self.is_remote:
            return str(self.local.parent / "ray_train"), None
        return join(self.root, "ray_train"), self.fs

    # ------------------------------------------------------------------ records
    def push(self, *names: str) -> None:
        """Make each remote entry (a file or folder of the run folder) equal to the local one; one missing
        locally is removed remotely."""
        if not self.is_remote:
            return
        for name in names:
            src, dst = self.local / name, self.path(name)
            if src.is_dir():
                self._delete(dst)
                self._upload_tree(src, dst)
            elif src.is_file():
                self._upload(src, dst)
            else:
                self._delete(dst)

    def pull(self, *names: str) -> None:
        """Make each local entry equal to the remote one; one missing remotely is removed locally."""
        if not self.is_remote:
            return
        import pyarrow.fs as pafs

        for name in names:
            src, dst = self.path(name), self.local / name
            kind = self.fs.get_file_info(src).type
            if kind == pafs.FileType.File:
                if dst.is_dir():
                    shutil.rmtree(dst)
                _download(self.fs, src, dst)
            else:
                _remove_local(dst)
                if kind == pafs.FileType.Directory:
                    _download_tree(self.fs, src, dst)

    def _upload(self, src: Path, dst: str, made: set[str] | None = None) -> None:
        parent = dst.rsplit("/", 1)[0] if "/" in dst else ""
        if parent and (made is None or parent not in made):
            self.fs.create_dir(parent, recursive=True)
            if made is not None:
                made.add(parent)
        with src.open("rb") as r, self.fs.open_output_stream(dst) as w:
            shutil.copyfileobj(r, w, _BLOCK)

    def _upload_tree(self, src: Path, dst: str, skip: tuple[str, ...] = ()) -> None:
        made: set[str] = set()
        for f in sorted(p for p in src.rglob("*") if p.is_file()):
            rel = f.relative_to(src).as_posix()
            if rel not in skip:
                self._upload(f, join(dst, rel), made)

    def _delete(self, path: str) -> None:
        import pyarrow.fs as pafs

        kind = self.fs.get_file_info(path).type
        if kind == pafs.FileType.Directory:
            self.fs.delete_dir(path)
        elif kind == pafs.FileType.File:
            self.fs.delete_file(path)

    # ------------------------------------------------------------------ checkpoints
    def ensure_local(self, checkpoint: Checkpoint) -> Checkpoint:
        """``checkpoint`` on this node (downloaded if its node lacks it; a local storage: as it is)."""
        return ensure_local(checkpoint) if self.is_remote else checkpoint

    def checkpoint_uri(self, name: str) -> str:
        return child_uri(self.uri, CHECKPOINT_DIR, name)

    def remote_checkpoints(self) -> list[tuple[int, str, bool]]:
        """``(step, remote folder, has its COMPLETE mark)`` of each remote checkpoint folder, oldest first."""
        import pyarrow.fs as pafs

        root = self.path(CHECKPOINT_DIR)
        found = sorted(
            (step, join(root, info.base_name))
            for info in self.fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
            if info.type == pafs.FileType.Directory and (step := folder_step(info.base_name)) is not None
        )
        marks = self.fs.get_file_info([join(p, COMPLETE) for _, p in found]) if found else []
        return [(s, p, m.type == pafs.FileType.File) for (s, p), m in zip(found, marks, strict=True)]

    def push_checkpoint(self, checkpoint: Checkpoint, num_to_keep: int) -> Checkpoint:
        """Upload a locally committed checkpoint: its files, then its manifest, then the ``COMPLETE``
        mark; then prune the remote ones to ``num_to_keep``. Returns it with its remote ``source``."""
        if not self.is_remote:
            return checkpoint
        name = checkpoint.path.name
        dst = self.path(CHECKPOINT_DIR, name)
        self._delete_checkpoint(dst)  # a stale folder of the same step (an upload a crash cut short)
        self._upload_tree(checkpoint.path, dst, skip=(MANIFEST, COMPLETE))
        self._upload(checkpoint.path / MANIFEST, join(dst, MANIFEST))
        self._upload(checkpoint.path / COMPLETE, join(dst, COMPLETE))
        self.prune(num_to_keep)
        return replace(checkpoint, source=self.checkpoint_uri(name))

    def _delete_checkpoint(self, path: str) -> None:
        """The mark first: a deletion cut short leaves an unmarked folder, never a marked partial one."""
        self._delete(join(path, COMPLETE))
        self._delete(path)

    def prune(self, num_to_keep: int) -> None:
        """Keep the newest ``num_to_keep`` complete remote checkpoints; drop older ones and unmarked
        folders older than the newest complete one (the local rule)."""
        found = self.remote_checkpoints()
        complete = [(s, p) for s, p, marked in found if marked]
        keep = {p for _, p in complete[-num_to_keep:]}
        newest = complete[-1][0] if complete else -1
        for step, path, marked in found:
            if path not in keep and (marked or step < newest):
                self._delete_checkpoint(path)

    def fetch_latest(self, store: CheckpointStore) -> Checkpoint | None:
        """The newest remote checkpoint that is complete and matches its manifest, downloaded into
        ``store``; each unusable newer one is logged (and skipped). Local checkpoint folders that are not
        complete remotely (an upload that never finished) are dropped: the remote folder is the truth."""
        found = self.remote_checkpoints()
        marked = {p.rsplit("/", 1)[-1] for _, p, m in found if m}
        if store.root.exists():
            for path in store.root.iterdir():
                if path.is_dir() and folder_step(path.name) is not None and path.name not in marked:
                    shutil.rmtree(path, ignore_errors=True)
        for _, path, complete in reversed(found):
            name = path.rsplit("/", 1)[-1]
            uri = self.checkpoint_uri(name)
            if not complete:
                log.warning("skipping checkpoint: checkpoint %s has no %s mark (its upload never finished)",
                            redact(uri), COMPLETE)
                continue
            try:
                return download_checkpoint(self.fs, path, uri, store.root / name)
            except CheckpointError as err:
                log.warning("skipping checkpoint: %s", err)
        return None

    def resolve(self, store: CheckpointStore, resume_from: str | None) -> Checkpoint | None:
        """Where an attempt starts with a URI storage: the newest good remote checkpoint, else
        ``resume_from`` (a URI: downloaded and verified; a local path: verified where it is)."""
        store.clean_staging()
        latest = self.fetch_latest(store)
        if latest is not None or not resume_from:
            return latest
        if is_uri(resume_from):
            fs, path = open_filesystem(resume_from, "checkpoint.resume_from")
            name = path.rstrip("/").rsplit("/", 1)[-1] or "checkpoint"
            return download_checkpoint(fs, path, resume_from, self.local / RESUME_DIR / name)
        return store.verify(Path(resume_from))

    def latest_location(self, store: CheckpointStore) -> tuple[str, int] | None:
        """``(where, step)`` of the newest complete checkpoint, for messages (remote: no download)."""
        if not self.is_remote:
            latest = store.latest()
            return (str(latest.path), latest.step) if latest else None
        complete = [(s, p) for s, p, marked in self.remote_checkpoints() if marked]
        if not complete:
            return None
        step, path = complete[-1]
        return self.checkpoint_uri(path.rsplit("/", 1)[-1]), step
