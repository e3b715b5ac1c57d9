"""The errors a step reports to the user as one line (exit code 1); they share one root, :class:`PipelineError`."""


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
