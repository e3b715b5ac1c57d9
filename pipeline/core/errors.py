"""The errors a step reports to the user as one line (exit code 1); they share one root, :class:`PipelineError`.
GDAL's own messages are kept here, not printed, so that a failure is reported once, as one of these lines."""
import collections
import itertools


class PipelineError(Exception):
    """Root of the errors a step reports to the user as one line."""


class ConfigError(PipelineError, ValueError):
    """The scene configuration or a command-line value is wrong."""


class InputDataError(PipelineError, ValueError):
    """Input files are readable but their content cannot be used (grids, bands, classes)."""


class InputFileError(PipelineError, OSError):
    """A raster, ``.mat`` or other input file is missing, unreadable, or not what it should be."""


def error_text(error: Exception) -> str:
    """The first line of a GDAL error, for one-line messages.

    >>> error_text(RuntimeError("x.tif: not recognized\\nmore")), error_text(RuntimeError(""))
    ('x.tif: not recognized', 'GDAL cannot open it')
    """
    text = str(error).strip()
    return text.splitlines()[0] if text else "GDAL cannot open it"


#: GDAL's messages (errors and warnings), the last 64 with their serial numbers, kept instead of printed on stderr.
GDAL_MESSAGES: collections.deque = collections.deque(maxlen=64)
_SERIALS = itertools.count(1)


def keep_gdal_message(kind: int, number: int, text: str) -> None:
    """GDAL's error handler for the whole process (``gdal.SetErrorHandler``; ``kind`` and ``number`` are GDAL's
    class and code): the message is kept in :data:`GDAL_MESSAGES`, never printed. Errors still raise where the
    bindings use exceptions; a failure reports the messages it caused (:func:`gdal_messages_since`)."""
    GDAL_MESSAGES.append((next(_SERIALS), str(text)))


def gdal_messages_mark() -> int:
    """A mark in GDAL's messages: :func:`gdal_messages_since` of it gives those kept after it."""
    return next(_SERIALS)


def gdal_messages_since(mark: int) -> list[str]:
    """GDAL's messages kept after ``mark`` (:func:`gdal_messages_mark`), oldest first."""
    return [text for serial, text in list(GDAL_MESSAGES) if serial > mark]
