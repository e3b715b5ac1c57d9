"""Files that appear whole or not at all: every writer (rasters, PNGs, JSON, ``.mat``) writes under a temporary
name in the file's own folder and renames it when complete, so an interrupted run never leaves a half-written file
that a later step would read."""
from __future__ import annotations

import contextlib
import errno
import os
import uuid
from pathlib import Path

#: Errors of a file system that takes no more data (full, a file too large, out of quota).
DISK_ERRORS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


@contextlib.contextmanager
def atomic_output(path: Path):
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    The temporary file is created with the permissions a plain ``open`` would give (the user's umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = new_file_beside(path, f"partial{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        if isinstance(error, OSError) and error.filename is None and error.errno in DISK_ERRORS:
            raise OSError(error.errno, error.strerror, str(path)) from None  # a full disk: name the file written
        raise


def new_file_beside(path: Path, suffix: str) -> Path:
    """Create an empty, hidden, uniquely named file ``.<stem>.<random>.<suffix>`` beside ``path`` (with the
    permissions a plain ``open`` gives, i.e. the user's umask) and return its path."""
    new = path.parent / f".{path.stem}.{uuid.uuid4().hex[:12]}.{suffix}"
    os.close(os.open(new, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    return new
