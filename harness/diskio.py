"""Writes that can fail on a full or read-only disk: one clear error naming the file
and the free space (:class:`StorageError`), and report files replaced atomically (a
temporary file beside the target, then ``os.replace``), so that a failed write leaves
the previous file, or none, in place and never a truncated one."""
from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path


class StorageError(Exception):
    """A file recipebench needs to write could not be written (disk full, read-only,
    quota, I/O error). The message is one line naming the file and the free space."""


def free_space(path: str | Path) -> str:
    """Free space on the filesystem holding ``path`` (or its nearest existing parent),
    e.g. ``"1.2 GB free"``; ``"free space unknown"`` when it cannot be read."""
    where = Path(path).absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        free = float(shutil.disk_usage(where).free)
    except OSError:
        return "free space unknown"
    if free < 1000:
        return f"{free:.0f} bytes free"
    unit = "KB"
    for unit in ("KB", "MB", "GB", "TB"):
        free /= 1000
        if free < 1000:
            break
    return f"{free:.1f} {unit} free"


def storage_error(path: str | Path, exc: BaseException) -> StorageError:
    """The one-line error for a failed write of ``path``."""
    text = str(exc)
    reason = getattr(exc, "strerror", None) or (text.splitlines()[0] if text else type(exc).__name__)
    return StorageError(f"cannot write {path}: {reason} ({free_space(path)} on its filesystem)")


def atomic_write(path: str | Path, data: str | bytes, mode: int = 0o644, sync: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and
    ``os.replace``: readers see the old file or the new one, never a part. ``sync``
    flushes it to disk first (a report; a cache entry that can be recomputed skips it).
    On failure the temporary file is removed and :class:`StorageError` raised."""
    path = Path(path)
    blob = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise storage_error(path, exc) from None
