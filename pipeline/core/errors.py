"""The errors a step reports to the user as one line (exit code 1); they share one root, :class:`PipelineError`.
GDAL's own messages are kept here, not printed, so that a failure is reported once, as one of these lines."""
import collections
import errno
import itertools
import os
import shutil


class PipelineError(Exception):
    """Root of the errors a step reports to the user as one line."""


class ConfigError(PipelineError, ValueError):
    """The scene configuration or a command-line value is wrong."""


class InputDataError(PipelineError, ValueError):
    """Input files are readable but their content cannot be used (grids, bands, classes)."""


class InputFileError(PipelineError, OSError):
    """A raster, ``.mat`` or other input file is missing, unreadable, or not what it should be."""


class ClusterError(PipelineError, RuntimeError):
    """The Dask cluster of a tiled run lost its scheduler or all its workers, or a task kept killing workers."""


def error_text(error: Exception) -> str:
    """The first line of a GDAL error, for one-line messages.

    >>> error_text(RuntimeError("x.tif: not recognized\\nmore")), error_text(RuntimeError(""))
    ('x.tif: not recognized', 'GDAL cannot open it')
    """
    text = str(error).strip()
    return text.splitlines()[0] if text else "GDAL cannot open it"


#: GDAL's messages (errors and warnings), the last 64 as (serial number, GDAL's class, text), kept instead of
#: printed on stderr.
GDAL_MESSAGES: collections.deque = collections.deque(maxlen=64)
_SERIALS = itertools.count(1)
#: GDAL's class of an error (CE_Failure); below it, debug messages and warnings.
GDAL_FAILURE = 3
#: A GDAL write failing on a file system with less free space than this (bytes) met a full disk: GDAL's threads
#: report "No space left on device" where no handler hears it.
NEARLY_FULL_BYTES = 16 * 2**20


def keep_gdal_message(kind: int, number: int, text: str) -> None:
    """GDAL's error handler for the whole process (``gdal.SetErrorHandler``; ``kind`` and ``number`` are GDAL's
    class and code): the message is kept in :data:`GDAL_MESSAGES`, never printed. Errors still raise where the
    bindings use exceptions; a failure reports the messages it caused (:func:`gdal_messages_since`)."""
    GDAL_MESSAGES.append((next(_SERIALS), kind, str(text)))


def gdal_messages_mark() -> int:
    """A mark in GDAL's messages: :func:`gdal_messages_since` of it gives those kept after it."""
    return next(_SERIALS)


def gdal_messages_since(mark: int, failures_only: bool = False) -> list[str]:
    """GDAL's messages kept after ``mark`` (:func:`gdal_messages_mark`), oldest first; only its errors if
    ``failures_only``."""
    return [text for serial, kind, text in list(GDAL_MESSAGES)
            if serial > mark and (kind >= GDAL_FAILURE or not failures_only)]


def write_failure(path, said: list[str]) -> OSError:
    """The OSError of a GDAL write of ``path`` that failed, GDAL having ``said`` these messages (the error's
    first): ENOSPC "No space left on device" when one says so or less than :data:`NEARLY_FULL_BYTES` are free
    in the file's folder, else EIO "GDAL could not write it" with GDAL's first words."""
    folder = os.path.dirname(os.path.abspath(path))
    if any("no space left on device" in text.lower() for text in said) or \
            (os.path.isdir(folder) and shutil.disk_usage(folder).free < NEARLY_FULL_BYTES):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return OSError(errno.EIO, f"GDAL could not write it ({said[0] if said else 'no reason given'})", str(path))
