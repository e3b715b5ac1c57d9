"""The command line of the step scripts, their one-line errors, timing and the run record ``run.json``.

Each step's ``main(argv)`` builds its parser here, turns the parsed flags into a :class:`~pipeline.run.config.Scene`
with :func:`scene_from_args`, and hands the scene (never the parsed flags) to its driver through
:func:`run_step`, which reports any :class:`~pipeline.core.errors.PipelineError` or error of the system as one
line.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import platform
import signal
import sys
import threading
import time
from pathlib import Path

from pipeline.core.atomic_files import atomic_output
from pipeline.run.config import DEFAULT_CONFIG, PROJECT_ROOT, Parameters, Scene, load_scene, ordinary_path
from pipeline.run import outputs
from pipeline.core.errors import PipelineError

log = logging.getLogger(__name__)


class OneLineParser(argparse.ArgumentParser):
    """An argument parser that reports a malformed command line in one line (no usage block), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see --help\n")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the step is, so that it cleans up as after Ctrl-C."""


def build_parser(description: str, parameter_names=(), seed: str | None = None,
                 earlier_names=()) -> argparse.ArgumentParser:
    """Argument parser with the common flags plus one flag per named parameter (default: configuration); ``seed``,
    the step's own seed parameter (e.g. ``split_seed``), is given by its flag or by ``--seed``. ``earlier_names``
    are settings of earlier steps, in a group of their own: given here, they are checked against the hand-offs
    those steps made (a different value is a one-line error saying what to do)."""
    parser = OneLineParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                          allow_abbrev=False)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help=f"scene TOML (default: {DEFAULT_CONFIG.relative_to(PROJECT_ROOT)})")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="folder for this step's inputs and outputs (default: data/<name>/)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    _add_parameter_flags(parser, (*([seed] if seed else []), *parameter_names), seed)
    if earlier_names:
        _add_parameter_flags(parser.add_argument_group(
            "settings of earlier steps", "taken from the hand-offs those steps made; give one only to check it"),
            earlier_names)
    return parser


def _add_parameter_flags(parser, names, seed: str | None = None) -> None:
    """One flag per parameter of ``names`` on ``parser`` (or an argument group), ``--seed`` too for ``seed``."""
    rules = Parameters.rules()
    for name in names:
        rule, default = rules[name]
        flags = ("--seed", flag_of(name)) if name == seed else (flag_of(name),)
        text = f"{rule.help} (default: [{rule.section}] {name} in the TOML, else {default!r})"
        if isinstance(default, bool):
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif isinstance(default, tuple) and isinstance(default[0], int):
            parser.add_argument(*flags, nargs="*", type=int, default=None, metavar="CLASS", help=text)
        elif isinstance(default, tuple):
            parser.add_argument(*flags, nargs="+", default=None, metavar="LAYER",
                                help=f"{text}; names from {', '.join(rule.choices)}, or their 0-based indices")
        elif isinstance(default, str):
            parser.add_argument(*flags, dest=name, default=None, metavar="{" + ",".join(rule.choices) + "}",
                                help=text)
        else:
            parser.add_argument(*flags, dest=name, type=type(default), default=None, help=text)


def flag_of(name: str) -> str:
    """The command-line flag of a parameter.

    >>> flag_of("n_segments")
    '--n-segments'
    """
    return "--" + name.replace("_", "-")


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    """``--scheduler`` and ``--workers``: where tiled work runs (Dask distributed)."""
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="Dask scheduler of a running cluster, e.g. tcp://10.0.0.5:8786 (default: start a "
                             "LocalCluster on this machine)")
    parser.add_argument("--workers", type=int, default=None,
                        help="LocalCluster worker processes (default: one per CPU core)")


def scene_from_args(args: argparse.Namespace) -> Scene:
    """The :class:`Scene` of parsed arguments, with flags overriding the configuration."""
    overrides = {name: getattr(args, name) for name in Parameters.rules() if hasattr(args, name)}
    scene = load_scene(args.config, args.workdir, overrides)
    for name in ("stretch_from", "validation"):  # paths given as flags
        if getattr(args, name, None) is not None:
            path = ordinary_path(getattr(args, name).resolve(), f"--{name.replace('_', '-')}")
            scene = dataclasses.replace(scene, **{name: path})
    if getattr(args, "validation_field", None) is not None:
        scene = dataclasses.replace(scene, validation_field=args.validation_field)
    return scene


def run_step(parser: argparse.ArgumentParser, argv, driver, *flags: str) -> int:
    """Parse ``argv``, build the scene and call ``driver(scene, *values of flags)``: the parsed command line goes
    no further. A pipeline error (an unreadable input among them) or an error of the system is reported as one
    line on stderr (:func:`error_line`), exit code 1; Ctrl-C and SIGTERM stop the step with its earlier outputs as
    they were (exit codes 130 and 143)."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
    with terminate_as_interrupt():
        try:
            driver(scene_from_args(args), *(getattr(args, flag) for flag in flags))
        except (PipelineError, OSError) as error:
            if args.debug:
                raise
            print(f"error: {error_line(error)}", file=sys.stderr)
            return 1
        except MemoryError as error:  # what the checks before long work did not foresee
            if args.debug:
                raise
            print(f"error: out of memory ({one_line(str(error)) or 'an allocation failed'}); choose a smaller "
                  f"n_segments, patch_width or per_class, or a tile_size; earlier outputs are left as they were",
                  file=sys.stderr)
            return 1
        except KeyboardInterrupt as interrupt:
            print("interrupted: earlier outputs are left as they were", file=sys.stderr)
            return 143 if isinstance(interrupt, Terminated) else 130
    return 0


def error_line(error: Exception) -> str:
    """The line reporting ``error``: a pipeline error's own message; for an error of the system (a full disk, a
    folder taken away) the file and the system's words, and that earlier outputs are as they were.

    >>> error_line(OSError(28, "No space left on device", "w/.staging-12-0a1b2c3d/x.tif"))
    'w/x.tif: No space left on device; earlier outputs are left as they were'
    """
    if isinstance(error, PipelineError):
        return one_line(outputs.final_path(str(error)))
    where = f"{error.filename}: " if error.filename else ""
    return f"{one_line(outputs.final_path(f'{where}{error.strerror or error}'))}; earlier outputs are left as they were"


def exit_process(code: int) -> None:
    """End a step run as a script with its exit ``code``. After Ctrl-C or SIGTERM (130, 143) the process ends at
    once, without waiting for threads still at work (a SLIC strip, a figure): what they would make is thrown
    away, and the step's earlier outputs are already as they were."""
    if code in (130, 143):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def one_line(message: str) -> str:
    """``message`` on one line whatever the paths in it hold: line breaks and other control characters are
    shown escaped (a newline as ``\\n``).

    >>> one_line("/tmp/a\\nb.tif: file not found")
    '/tmp/a\\\\nb.tif: file not found'
    """
    return "".join(repr(c)[1:-1] if c.isprintable() is False and c != " " else c for c in message)


@contextlib.contextmanager
def terminate_as_interrupt():
    """Within the block, SIGTERM raises :class:`Terminated` (in the main thread only; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def native_stderr_silenced():
    """Send what C/C++ libraries write straight to file descriptor 2 (TensorFlow's start-up and graph messages,
    which its log-level settings no longer hold back) to /dev/null for the block. Python's own ``sys.stderr``
    (warnings, error lines) still reaches the terminal."""
    try:
        python_on_fd2 = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # replaced, e.g. by a test's capture
        python_on_fd2 = False
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    previous = sys.stderr
    if python_on_fd2:
        sys.stderr = open(os.dup(saved), "w", buffering=1, encoding=previous.encoding, errors="backslashreplace")
    try:
        yield
    finally:
        if python_on_fd2:
            sys.stderr.close()
            sys.stderr = previous
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def timed(label: str, timings: dict | None = None):
    """Log how long the block took; record it in ``timings`` (seconds) when given."""
    start = time.perf_counter()
    log.info("%s ...", label)
    yield
    seconds = time.perf_counter() - start
    if timings is not None:
        timings[label] = round(seconds, 3)
    log.info("%s: %.2f s", label, seconds)


def package_versions() -> dict:
    """Versions of Python and of the packages the pipeline depends on."""
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for package in ("numpy", "scipy", "scikit-image", "scikit-learn", "GDAL", "tensorflow-cpu", "tensorflow",
                    "keras", "tensorboardX", "matplotlib"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions


def record_run(scene: Scene, path: Path, step: str, details: dict, inputs: dict | None = None) -> None:
    """Write to ``path`` the work folder's ``run.json`` with this step's parameters, timings and results added,
    and ``inputs`` (input path -> SHA-256 as read), if given; paths of staged outputs as they are once committed."""
    record = {}
    with contextlib.suppress(OSError, json.JSONDecodeError, UnicodeDecodeError):
        record = json.loads(scene.output("run.json").read_text())
    if not isinstance(record, dict):
        record = {}
    record.update({"scene": scene.name, "config": str(scene.config_path),
                   "config_text": scene.config_path.read_text(encoding="utf-8-sig"), "packages": package_versions()})
    if inputs:
        record["inputs_sha256"] = inputs
    record.setdefault("steps", {})[step] = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                            "parameters": scene.params.as_dict(), **committed_paths(details)}
    write_json(path, record)


def committed_paths(value):
    """``value`` (JSON-like: dicts, lists, text) with every staged output's path as it is once committed.

    >>> committed_paths({"image": ["w/.staging-12-0a1b2c3d/sources/image.vrt"], "n": 3})
    {'image': ['w/sources/image.vrt'], 'n': 3}
    """
    if isinstance(value, dict):
        return {key: committed_paths(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [committed_paths(item) for item in value]
    return outputs.final_path(value) if isinstance(value, str) else value


def write_json(path: Path, content: dict) -> None:
    """Write ``content`` as indented, sorted-key JSON atomically."""
    with atomic_output(path) as temporary:
        temporary.write_text(json.dumps(content, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
