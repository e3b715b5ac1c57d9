"""Shared plumbing of the step scripts: scene configuration, command line, timing and the run record.

A scene is a TOML file (default ``data/aberystwyth.toml``). Its paths are relative to the file.
Step parameters have built-in defaults in :data:`PARAMETERS`; the TOML's sections override them
and command-line flags override both, so running a step with no arguments is the demo run.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import logging
import platform
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from gdal_tif2rgb import ConfigError, InputFileError, PipelineError, atomic_output

PROJECT_ROOT = Path(__file__).resolve().parent
DEFAULT_CONFIG = PROJECT_ROOT / "data" / "aberystwyth.toml"
RUNS_DIR = PROJECT_ROOT / "runs"

#: The tutorial's 8 layers, in the order of ``layers.tif`` and of every patch's last axis.
LAYER_NAMES = ("blue", "green", "red", "nir", "swir", "ndvi", "ndwi", "ndbi")
#: Extra patch channel the CNN may see: 1 on the pixels of the superpixel the patch is centred on, else 0.
MASK_CHANNEL = "mask"
SPECTRAL_BANDS = LAYER_NAMES[:5]
INDEX_LAYERS = LAYER_NAMES[5:]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Parameter:
    """A step parameter: TOML section, built-in default, help text and the values it accepts."""

    section: str
    default: object
    help: str
    minimum: float | None = None
    maximum: float | None = None
    odd: bool = False
    choices: tuple | None = None  # for lists of names
    count: int | None = None  # exact list length


PARAMETERS = {
    "seed": Parameter("run", 42, "random seed of every random choice (split, balancing, training)", minimum=0),
    "n_segments": Parameter("superpixels", 30000, "approximate number of SLIC superpixels", minimum=1),
    "compactness": Parameter("superpixels", 30.0, "SLIC compactness (CIELAB units; higher = squarer)", minimum=1e-6),
    "slic_layers": Parameter("superpixels", ["red", "green", "blue"], "the 3 layers SLIC segments, as an RGB triplet",
                             choices=LAYER_NAMES, count=3),
    "window": Parameter("sampling", 25, "patch width w in pixels (odd; the tutorial CNN needs >= 19)", minimum=19,
                        odd=True),
    "test_fraction": Parameter("sampling", 0.3, "share of labelled superpixels held out for testing",
                               minimum=0.01, maximum=0.9),
    "block_size": Parameter("sampling", 128, "side of the spatial split's blocks in pixels", minimum=8),
    "tile_size": Parameter("tiling", 0, "process the scene in tiles of this many pixels a side on a Dask cluster "
                                        "(0 = whole scene in memory)", minimum=0),
    "per_class": Parameter("balance", 2000, "training samples drawn per class", minimum=1),
    "epochs": Parameter("training", 20, "training epochs", minimum=1),
    "batch_size": Parameter("training", 64, "training batch size", minimum=1),
    "validation_fraction": Parameter("training", 0.3, "share of the balanced set kept for validation",
                                     minimum=0.0, maximum=0.9),
    "train_layers": Parameter("training", [*LAYER_NAMES, MASK_CHANNEL],
                              "channels the CNN sees (band4train): layers, plus 'mask' = the superpixel's own pixels",
                              choices=(*LAYER_NAMES, MASK_CHANNEL)),
    "projector_layers": Parameter("training", ["red", "green", "blue"],
                                  "3 layers of the projector's sprite images (band4projector)",
                                  choices=LAYER_NAMES, count=3),
    "augment": Parameter("training", True, "turn and mirror the training patches at random, anew each epoch"),
    "prior_correction": Parameter("training", True, "weight predicted class probabilities by the classes' shares "
                                                    "among training superpixels (undoes the balancing's equal priors)"),
}


def check_parameter(name: str, value, source: str):
    """Return ``value`` if it suits parameter ``name``, else raise :class:`ConfigError` naming ``source``."""
    spec = PARAMETERS[name]
    default = spec.default
    where = f"{source}: {name} = {value!r}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false")
        return value
    if isinstance(default, list):
        if isinstance(value, (str, int)):
            value = [value]
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{where} must be a list of layer names from {', '.join(spec.choices)}")
        value = [_layer_name(v, spec.choices) for v in value]
        unknown = [v for v in value if v not in spec.choices]
        if unknown:
            raise ConfigError(f"{where} names unknown layer(s) {unknown}; choose from {', '.join(spec.choices)}")
        if spec.count is not None and len(value) != spec.count:
            raise ConfigError(f"{where} must name exactly {spec.count} layers")
        return list(value)
    kind = type(default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        raise ConfigError(f"{where} must be {'an integer' if kind is int else 'a number'}")
    value = kind(value)
    if spec.minimum is not None and value < spec.minimum:
        raise ConfigError(f"{where} must be at least {spec.minimum}")
    if spec.maximum is not None and value > spec.maximum:
        raise ConfigError(f"{where} must be at most {spec.maximum}")
    if spec.odd and value % 2 == 0:
        raise ConfigError(f"{where} must be odd, so the patch has a centre pixel")
    return value


def _layer_name(value, choices: tuple):
    """A layer given by name, or by its 0-based index in ``choices`` (an int or a string of digits)."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(choices):
        return choices[value]
    return value


@dataclass
class Scene:
    """A resolved scene: inputs, band numbers, classes, parameters and the work folder."""

    name: str
    config_path: Path
    image: Path
    reference: Path
    bands: dict  # layer name -> 1-based band number in ``image``
    classes: dict  # class name -> list of reference values; order gives codes 0, 1, ...
    params: dict = field(default_factory=dict)
    workdir: Path = PROJECT_ROOT / "data"

    @property
    def class_names(self) -> list[str]:
        return list(self.classes)

    def output(self, filename: str) -> Path:
        """Path of a file in the work folder."""
        return self.workdir / filename


def load_scene(config_path: Path, workdir: Path | None = None, overrides: dict | None = None) -> Scene:
    """Read and check a scene TOML; apply command-line ``overrides`` (name -> value, None = not given)."""
    config_path = Path(config_path)
    if not config_path.is_file():
        raise InputFileError(f"{config_path}: configuration file not found")
    try:
        config = tomllib.loads(config_path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{config_path}: not valid TOML ({error})") from None
    for key in ("name", "image", "reference", "bands", "classes"):
        if key not in config:
            raise ConfigError(f"{config_path}: missing key '{key}'")
    base = config_path.resolve().parent
    bands = _check_bands(config["bands"], config_path)
    classes = _check_classes(config["classes"], config_path)
    params = {name: spec.default for name, spec in PARAMETERS.items()}
    sections = {spec.section for spec in PARAMETERS.values()}
    for section, table in config.items():
        if section in ("name", "image", "reference", "bands", "classes"):
            continue
        if section not in sections or not isinstance(table, dict):
            raise ConfigError(f"{config_path}: unknown key '{section}'; sections are {', '.join(sorted(sections))}")
        for name, value in table.items():
            if name not in PARAMETERS or PARAMETERS[name].section != section:
                raise ConfigError(f"{config_path}: unknown parameter '{name}' in [{section}]")
            params[name] = check_parameter(name, value, str(config_path))
    for name, value in (overrides or {}).items():
        if value is not None:
            params[name] = check_parameter(name, value, "command line")
    name = str(config["name"])
    return Scene(name=name, config_path=config_path, image=(base / config["image"]).resolve(),
                 reference=(base / config["reference"]).resolve(), bands=bands, classes=classes, params=params,
                 workdir=Path(workdir) if workdir else PROJECT_ROOT / "data" / name)


def _check_bands(bands, config_path: Path) -> dict:
    if not isinstance(bands, dict):
        raise ConfigError(f"{config_path}: [bands] must map layer names to band numbers")
    unknown = [name for name in bands if name not in LAYER_NAMES]
    if unknown:
        raise ConfigError(f"{config_path}: unknown band name(s) {unknown} in [bands]; use {', '.join(LAYER_NAMES)}")
    missing = [name for name in SPECTRAL_BANDS if name not in bands]
    if missing:
        raise ConfigError(f"{config_path}: [bands] lacks {', '.join(missing)}")
    for name, number in bands.items():
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise ConfigError(f"{config_path}: [bands] {name} = {number!r} must be a 1-based band number")
    return dict(bands)


def _check_classes(classes, config_path: Path) -> dict:
    if not isinstance(classes, dict) or len(classes) < 2:
        raise ConfigError(f"{config_path}: [classes] must map at least 2 class names to reference values")
    if len(classes) >= 255:
        raise ConfigError(f"{config_path}: [classes] may hold at most 254 classes")
    seen = {}
    for name, values in classes.items():
        values = [values] if isinstance(values, int) else values
        if not isinstance(values, list) or not values or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise ConfigError(f"{config_path}: [classes] {name} = {values!r} must list reference values (integers >= 0)")
        for value in values:
            if value in seen:
                raise ConfigError(f"{config_path}: reference value {value} is given to both {seen[value]} and {name}")
            seen[value] = name
        classes[name] = values
    return dict(classes)


def build_parser(description: str, parameter_names=()) -> argparse.ArgumentParser:
    """Argument parser with the common flags plus one flag per named parameter (default: configuration)."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help=f"scene TOML (default: {DEFAULT_CONFIG.relative_to(PROJECT_ROOT)})")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="folder for this step's inputs and outputs (default: data/<name>/)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    for name in ("seed", *parameter_names):
        spec = PARAMETERS[name]
        flag = "--" + name.replace("_", "-")
        text = f"{spec.help} (default: [{spec.section}] {name} in the TOML, else {spec.default!r})"
        if isinstance(spec.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif isinstance(spec.default, list):
            parser.add_argument(flag, nargs="+", default=None, metavar="LAYER",
                                help=f"{text}; names from {', '.join(spec.choices)}, or their 0-based indices")
        else:
            parser.add_argument(flag, type=type(spec.default), default=None, help=text)
    return parser


def add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    """``--scheduler`` and ``--workers``: where tiled work runs (Dask distributed)."""
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="Dask scheduler of a running cluster, e.g. tcp://10.0.0.5:8786 (default: start a "
                             "LocalCluster on this machine)")
    parser.add_argument("--workers", type=int, default=None,
                        help="LocalCluster worker processes (default: one per CPU core)")


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int | None):
    """A ``dask.distributed`` client of the cluster at ``scheduler``, or of a LocalCluster made for the block."""
    from dask.distributed import Client, LocalCluster

    for name in ("distributed", "tornado"):  # Dask's start-up and shutdown chatter, set up on its import
        logging.getLogger(name).setLevel(logging.ERROR)
    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    import os

    with LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


def map_in_order(client, function, argument_tuples, in_flight: int):
    """Run ``function(*arguments)`` for each tuple on the cluster, at most ``in_flight`` at a time, and yield
    the results in the order given (so ids and file offsets do not depend on which worker finished first)."""
    from collections import deque

    arguments = iter(argument_tuples)
    pending = deque(client.submit(function, *a, pure=False) for a in itertools.islice(arguments, in_flight))
    while pending:
        future = pending.popleft()
        result = future.result()
        future.release()
        following = next(arguments, None)
        if following is not None:
            pending.append(client.submit(function, *following, pure=False))
        yield result


def scene_from_args(args: argparse.Namespace) -> Scene:
    """The :class:`Scene` of parsed arguments, with flags overriding the configuration."""
    overrides = {name: getattr(args, name) for name in PARAMETERS if hasattr(args, name)}
    return load_scene(args.config, args.workdir, overrides)


def run_step(step_function, args: argparse.Namespace) -> int:
    """Run ``step_function(args)``; report a :class:`PipelineError` as one line on stderr, exit code 1."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
    try:
        step_function(args)
    except PipelineError as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: earlier outputs are left as they were", file=sys.stderr)
        return 130
    return 0


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


def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of a file, read in 8 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def package_versions() -> dict:
    """Versions of Python and of the packages the pipeline depends on."""
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for package in ("numpy", "scipy", "scikit-image", "scikit-learn", "GDAL", "tensorflow-cpu", "tensorflow",
                    "keras", "tensorboardX", "matplotlib"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions


def record_run(scene: Scene, step: str, details: dict) -> None:
    """Add this step's parameters, timings and results to ``run.json`` in the work folder."""
    path = scene.output("run.json")
    record = {}
    if path.is_file():
        with contextlib.suppress(json.JSONDecodeError):
            record = json.loads(path.read_text())
    inputs = {str(p): file_sha256(p) for p in (scene.image, scene.reference)} if step.startswith("Step0") else None
    record.update({"scene": scene.name, "config": str(scene.config_path), "config_text": scene.config_path.read_text(),
                   "packages": package_versions()})
    if inputs:
        record["inputs_sha256"] = inputs
    record.setdefault("steps", {})[step] = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                            "parameters": scene.params, **details}
    write_json(path, record)


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


def check_exists(path: Path, made_by: str) -> Path:
    """Return ``path`` if it exists, else raise an error saying which step to run first."""
    if not Path(path).is_file():
        raise InputFileError(f"{path}: not found; run {made_by} first")
    return Path(path)

