"""Atomic file writes: a file is either its old self or completely the new one, never half-written.

The data go to a temporary file in the same folder (so that ``os.replace`` is a rename on one file
system), which is flushed and fsync'ed, given the usual mode of a new file (``0o666`` less the
umask; ``mkstemp`` alone would leave ``0o600``) and renamed over the target. The folder is created
if missing. On any error the temporary file is removed and the target is untouched.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


def new_file_mode() -> int:
    """The mode a newly created file gets here: ``0o666`` less the process's umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: PathLike, writer: Callable[[BinaryIO], object], *, fsync: bool = True) -> None:
    """Call ``writer(f)`` with the temporary file ``f`` (open for binary writing) and put the result
    at ``path`` atomically. ``fsync=False`` skips the fsync (caches that may be lost in a crash)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: PathLike, data: Optional[bytes] = None,
                       writer: Optional[Callable[[BinaryIO], object]] = None) -> None:
    """Write ``data`` (then, if given, whatever ``writer(f)`` writes to the open temporary file) to
    ``path`` atomically."""
    def write(f: BinaryIO) -> None:
        if data is not None:
            f.write(data)
        if writer is not None:
            writer(f)

    atomic_write(path, write)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode(encoding))


__all__ = ["new_file_mode", "atomic_write", "atomic_write_bytes", "atomic_write_text"]
