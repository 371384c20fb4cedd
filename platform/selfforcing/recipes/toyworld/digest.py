"""Content digests of saved generators: what chains the toy-world stages and checks the shipped teacher.

A stage's cache key holds the digests of the checkpoints it was trained from, so a student distilled from
one teacher is never reused with another teacher trained under the same config (older code, another
machine, a retrain). The digest is the sha256 of the weight files' bytes (safetensors are deterministic
for the same tensors), in file-name order.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

WEIGHT_GLOB = "*.safetensors"


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of one file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def weights_sha256(folder: str | Path) -> str:
    """Hex sha256 over every ``*.safetensors`` file of a generator directory (names and bytes, sorted)."""
    folder = Path(folder)
    files = sorted(folder.glob(WEIGHT_GLOB))
    if not files:
        raise FileNotFoundError(f"{folder} holds no {WEIGHT_GLOB} weights to digest")
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(bytes.fromhex(file_sha256(f)))
    return h.hexdigest()
