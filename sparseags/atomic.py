"""Atomic file output: write to a temporary file beside the target, then rename it over the target.

A failed or interrupted write never leaves a half-written file and never destroys the previous
version, which is what the CLI promises for every output. Temporary files get the permissions a plain
``open()`` would give (``mkstemp`` creates them 0600).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from sparseags.errors import UserError


class OutputError(UserError, OSError):
    """An output file could not be written, described in one line naming the file."""


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _before_write(path: Path) -> None:
    """Called before every atomic write with its target; a no-op. Fault-injection tests replace it (e.g. to
    raise ``OSError(errno.ENOSPC)`` at the k-th write), which then fails like a real write would."""


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, for writers that pick a format by extension).

    On success the temporary file is renamed over `path`; on any error it is removed and `path` is left
    as it was. OS errors become :class:`OutputError`.
    """
    path = Path(path)
    try:
        _before_write(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
        os.close(fd)
    except OSError as err:
        raise OutputError(f"{path}: cannot write file ({err.strerror or err})") from err
    tmp = Path(tmp_name)
    try:
        yield tmp
        try:
            os.chmod(tmp, 0o666 & ~_UMASK)
            os.replace(tmp, path)
        except OSError as err:
            raise OutputError(f"{path}: cannot write file ({err.strerror or err})") from err
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (temporary file + fsync + rename). Returns the path."""
    with atomic_output(path) as tmp:
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as err:
            raise OutputError(f"{path}: cannot write file ({err.strerror or err})") from err
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
