"""Write report files whole or not at all, into folders only their owner's group reads.

A run folder is read back by a later prediction run (``report.json`` names
its model), so a crash or a full disk mid-write must leave either the old
file or the new one, never half of either.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["FOLDER_MODE", "FILE_MODE", "private_folder", "write_atomic"]

# Results hold IDs, labels and predictions: the owner writes, the group
# reads, others see nothing, whatever the umask.
FOLDER_MODE = 0o750
FILE_MODE = 0o640

Data = bytes | str | Callable[[BinaryIO], object]


def write_atomic(path: str | Path, data: Data, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder.

    The temporary file is created with ``O_EXCL | O_NOFOLLOW``, flushed to
    disk and renamed over ``path`` (:func:`os.replace`), so readers see the
    old file until the new one is complete, and a symbolic link at ``path``
    is replaced rather than written through.

    Parameters
    ----------
    path : str | Path
        The file to write; its folder must exist.
    data : bytes | str | Callable[[BinaryIO], object]
        The content (``str`` is written as UTF-8), or a function that writes
        it into the binary file it is given (``frame.to_csv``, ``np.savez``,
        ``fig.savefig``). If the function raises, ``path`` is left as it was.
    mode : int (default: 0o644)
        Permission bits of the new file, set exactly (not reduced by the umask).

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                         mode)
    try:
        with os.fdopen(descriptor, "wb") as file:
            os.fchmod(file.fileno(), mode)
            if callable(data):
                data(file)
            else:
                file.write(data.encode() if isinstance(data, str) else data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def private_folder(path: str | Path, mode: int = FOLDER_MODE) -> Path:
    """Create ``path`` and its missing parents with ``mode``; return it.

    Folders that already exist keep their mode: a results folder the user
    chose, or their home, is not ours to change.
    """
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for folder in missing:
        folder.chmod(mode)  # mkdir's mode is reduced by the umask
    return path
