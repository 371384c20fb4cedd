"""Storage URIs: which ``run.storage_path`` is a pyarrow.fs URI, its filesystem, paths inside it, and the
local folder that mirrors it. Opening and checking fail with a ``ConfigError`` naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..config import ConfigError


def is_uri(storage_path: str) -> bool:
    """A pyarrow.fs URI (``scheme://...``), as opposed to a local path."""
    return "://" in storage_path


def redact(uri: str) -> str:
    """``uri`` without a password in its user info (``s3://key:secret@bucket`` -> ``s3://key:***@bucket``)."""
    s = urlsplit(uri)
    if s.password is None:
        return uri
    return urlunsplit((s.scheme, s.netloc.replace(f":{s.password}@", ":***@", 1), s.path, s.query, s.fragment))


def child_uri(uri: str, *parts: str) -> str:
    """``uri`` with ``parts`` appended to its path (its query, e.g. ``?region=...``, kept)."""
    s = urlsplit(uri)
    path = "/".join([s.path.rstrip("/"), *parts])
    return f"{s.scheme}://{s.netloc}{path}" + (f"?{s.query}" if s.query else "")


def local_mirror(local_dir: str | Path, uri: str) -> Path:
    """The local folder of storage ``uri`` under ``local_dir``: ``<local_dir>/<scheme>/<host>/<path>``, so
    two storages never share a local folder (a password in the URI is left out)."""
    s = urlsplit(uri)
    host = s.netloc.rsplit("@", 1)[-1] if s.password is not None else s.netloc
    parts = [s.scheme, host, *s.path.split("/")]
    return Path(local_dir).expanduser().resolve().joinpath(*[p for p in parts if p not in ("", ".", "..")])


def join(root: str, *parts: str) -> str:
    """A path inside a pyarrow filesystem (whose root may be '' or '/')."""
    base = root.rstrip("/")
    if not base and not root.startswith("/"):
        return "/".join(parts)
    return "/".join([base, *parts])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_filesystem(uri: str, field: str = "run.storage_path") -> tuple[Any, str]:
    """``(pyarrow filesystem, path inside it)`` of ``uri``; a ``ConfigError`` naming ``field`` when pyarrow
    does not know the scheme or cannot build the filesystem (e.g. hdfs without a JVM)."""
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...; the message says why
        raise ConfigError(
            f"{field} = {redact(uri)!r}: pyarrow.fs cannot open it ({_first_line(exc)}); give a local path or "
            f"a URI that pyarrow.fs.FileSystem.from_uri accepts (s3://, gs://, abfs://, hdfs://, file://)"
        ) from None


def check_reachable(fs: Any, path: str, uri: str) -> None:
    """One metadata request: a wrong endpoint, missing credentials or a file in the way fail here, before
    Ray or any actor starts."""
    import pyarrow.fs as pafs

    try:
        info = fs.get_file_info(path)
    except Exception as exc:  # noqa: BLE001 - network, permission and credential errors alike
        raise ConfigError(
            f"run.storage_path: cannot reach {redact(uri)!r} ({_first_line(exc)}); check the address, the "
            f"network and the credentials of the storage"
        ) from None
    if info.type == pafs.FileType.File:
        raise ConfigError(f"run.storage_path: {redact(uri)!r} is a file; the run folder must be a folder")
