"""The scene configuration: a TOML file naming the inputs, bands and classes, and the step parameters.

A scene is a TOML file (default ``data/aberystwyth.toml``); its paths are relative to the file. Step parameters
have built-in defaults in :class:`Parameters`; the TOML's sections override them and command-line flags
override both, so running a step with no arguments is the demo run.
"""
from __future__ import annotations

import difflib
import glob
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.vocabulary import EXTRA_BANDS, LAYER_NAMES
from pipeline.core.errors import ConfigError, InputFileError
from pipeline.run.parameters import SEEDS, Parameters, check_value

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = PROJECT_ROOT / "data" / "aberystwyth.toml"
RUNS_DIR = PROJECT_ROOT / "runs"
#: Keys of the TOML's top level that are not parameter sections, and those of them a scene must have.
SCENE_KEYS = ("name", "image", "reference", "bands", "classes", "aoi", "reference_field", "stretch_from", "mask",
              "mask_values", "composite", "title", "descriptions")
REQUIRED_KEYS = ("name", "image", "classes")
#: Older parameter names still accepted in the TOML.
RENAMED = {"window": "patch_width"}
#: A scene name is a plain folder name: it becomes data/<name>/ and runs/<name>-<time>/.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: Class names: printable, no leading or trailing blanks, no tabs or newlines (they label maps, tables, metadata).
CLASS_NAME_PATTERN = re.compile(r"[^\s\x00-\x1f\x7f](?:[^\t\n\r\x00-\x1f\x7f]{0,62}[^\s\x00-\x1f\x7f])?")


#: Characters that make an image path a glob pattern of tiles.
PATTERN_CHARACTERS = "*?["

@dataclass(frozen=True)
class Tiles:
    """One date given as tiles: the glob ``pattern`` (as written in the scene, made absolute) and the ``files`` it
    matched, sorted by path. Its text is the pattern."""

    pattern: str
    files: tuple

    def __str__(self) -> str:
        return self.pattern


def is_pattern(text: str) -> bool:
    """Whether an image path is a glob pattern.

    >>> is_pattern("tiles/*.tif"), is_pattern("scene.tif")
    (True, False)
    """
    return any(character in text for character in PATTERN_CHARACTERS)


def tiles_of(base: Path, pattern: str, what: str) -> Tiles:
    """The :class:`Tiles` a glob ``pattern`` (relative to the folder ``base``; ``**`` crosses folders) matches;
    a one-line ConfigError naming ``what`` (e.g. "scene.toml: image") and the pattern when it matches nothing."""
    absolute = pattern if Path(pattern).is_absolute() else os.path.join(glob.escape(str(base)), pattern)
    files = tuple(sorted(Path(path) for path in glob.glob(absolute, recursive=True)))
    if not files:
        raise ConfigError(f"{what} = {pattern!r} matches no file (looked for {absolute}); check the pattern")
    return Tiles(str(Path(base, pattern)), files)


@dataclass(frozen=True)
class Scene:
    """A resolved scene: inputs, band numbers, classes, parameters and the work folder."""

    name: str
    config_path: Path
    images: tuple  # one or more dates: rasters, Sentinel-2 products (.SAFE folder, .zip, band folder), Tiles of a
    # glob pattern; str: /vsi...
    reference: Path | str | None  # a raster on any grid, or a vector file; None: a scene to map, not to train on
    bands: dict  # layer name -> 1-based band number or band description (rasters), band name "B02" (products)
    classes: dict  # class name -> list of reference values; order gives codes 0, 1, ...
    params: Parameters
    workdir: Path
    aoi: dict | Path | None = None  # {"bbox": [xmin, ymin, xmax, ymax], "crs": ...} or a vector file
    reference_field: str | None = None  # attribute of a vector reference holding the class values
    stretch_from: Path | None = None  # a trained model.keras whose training scene's stretch limits Step 0 uses
    validation: Path | None = None  # a labelled validation sample (points) Step 3 estimates areas and accuracy from
    validation_field: str = "reference"  # the field of ``validation`` holding the labels
    mask: Path | str | None = None  # a raster (any grid) whose ``mask_values`` mark pixels to leave out
    mask_values: tuple = ()  # values of ``mask`` that are masked
    composite: str = "median"  # how several dates combine, pixel by pixel, over their clear observations
    title: str | None = None  # the report's title; None: the scene name with a capital
    descriptions: dict = field(default_factory=dict)  # class name -> what the class holds here, for legends and tables
    given_flags: frozenset = frozenset()  # the parameters given as flags to this step
    carried_flags: frozenset = frozenset()  # those an earlier step was given as flags, taken from its hand-offs

    @property
    def flags(self) -> list[str]:
        """The parameters set on a command line, this step's or an earlier one's, sorted: a hand-off records them,
        so that a later step takes their values as its defaults (:mod:`pipeline.handoffs.settings`)."""
        return sorted(self.given_flags | self.carried_flags)

    @property
    def display_title(self) -> str:
        """The scene's title for the report: ``title`` as given, else the name with a capital ("Aberystwyth")."""
        return self.title or self.name[:1].upper() + self.name[1:]

    def class_label(self, name: str) -> str:
        """A class name with its description, if the TOML gives one: "crop (improved pasture)"."""
        return f"{name} ({self.descriptions[name]})" if self.descriptions.get(name) else name

    @property
    def image(self) -> Path | str | Tiles:
        """The first date: its grid (cut to the aoi) is the work grid."""
        return self.images[0]

    @property
    def class_names(self) -> list[str]:
        return list(self.classes)

    def output(self, filename: str) -> Path:
        """Path of a file in the work folder."""
        return self.workdir / filename


def load_scene(config_path: Path, workdir: Path | None = None, overrides: dict | None = None) -> Scene:
    """Read and check a scene TOML; apply command-line ``overrides`` (name -> value, None = not given)."""
    config_path = Path(config_path)
    config = _read_toml(config_path)
    assessment = config.get("assessment", {})
    validation = assessment.pop("validation", None) if isinstance(assessment, dict) else None
    validation_field = assessment.pop("validation_field", "reference") if isinstance(assessment, dict) else None
    section_values = _section_values(config, config_path)  # unknown keys first: a misspelt one is not "missing"
    for key in REQUIRED_KEYS:
        if key not in config:
            raise ConfigError(f"{config_path}: missing key '{key}'")
    base = config_path.resolve().parent
    params = Parameters().replaced(section_values, str(config_path))
    overrides = {name: value for name, value in (overrides or {}).items() if value is not None}
    params = params.replaced(overrides, "command line")
    name = _check_name(config["name"], config_path)
    return Scene(name=name, config_path=config_path, images=_check_images(config["image"], base, config_path),
                 given_flags=frozenset(overrides),
                 reference=input_path(base, config["reference"], "reference", config_path)
                 if "reference" in config else None,
                 bands=_check_bands(config.get("bands", {}), config_path),
                 classes=_check_classes(config["classes"], config_path), params=params,
                 workdir=Path(workdir) if workdir else PROJECT_ROOT / "data" / name,
                 aoi=_check_aoi(config.get("aoi"), base, config_path),
                 reference_field=_check_field(config.get("reference_field"), config_path),
                 stretch_from=input_path(base, config["stretch_from"], "stretch_from", config_path)
                 if "stretch_from" in config else None,
                 validation=None if validation is None else input_path(base, validation, "validation", config_path),
                 validation_field=_check_field(validation_field, config_path, "validation_field"),
                 **_check_mask(config, base, config_path), title=_check_title(config.get("title"), config_path),
                 descriptions=_check_descriptions(config.get("descriptions", {}), config["classes"], config_path))


def _check_images(value, base: Path, config_path: Path) -> tuple:
    """One date (a path) or several (a list of paths), each relative to the TOML; a glob pattern (``tiles/*.tif``)
    that is not itself a file is one date given as tiles (:class:`pipeline.run.config.Tiles`)."""
    values = value if isinstance(value, list) else [value]
    if not values or len(values) > 254:
        raise ConfigError(f"{config_path}: image must be a path or a list of 1 to 254 paths (one per date)")
    images = tuple(input_path(base, v, "image", config_path) for v in values)
    images = tuple(tiles_of(base, v, f"{config_path}: image") if isinstance(image, Path) and is_pattern(v)
                   and not image.exists() else image for v, image in zip(values, images))
    seen = {}
    for value, image in zip(values, images):
        identity = str(image), _file_identity(image)
        for earlier, (text, file) in seen.items():
            if text == identity[0] or file is not None and file == identity[1]:
                raise ConfigError(f"{config_path}: image dates {earlier} and {value} are the same file (the same "
                                  f"path, a link or another name of it); list each date once")
        seen[value] = identity
    return images


def _file_identity(image) -> tuple | None:
    """The device and inode numbers of a date's file or folder (of each tile of :class:`Tiles`), links followed;
    None where there is no such file (a GDAL virtual path)."""
    files = image.files if isinstance(image, Tiles) else [image]
    try:
        return tuple((stat.st_dev, stat.st_ino) for stat in map(os.stat, files))
    except (OSError, TypeError, ValueError):
        return None


#: How several dates can be combined.
COMPOSITES = ("median",)


def _check_mask(keys: dict, base: Path, config_path: Path) -> dict:
    """The scene's ``mask``, ``mask_values`` and ``composite``, checked."""
    checked = {}
    if "mask" in keys:
        checked["mask"] = input_path(base, keys["mask"], "mask", config_path)
        values = keys.get("mask_values")
        if not isinstance(values, list) or not values or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise ConfigError(f"{config_path}: mask needs mask_values = [...], the values (finite numbers) of the "
                              f"mask raster to leave out (e.g. [1] or [8, 9, 10]); got {values!r}")
        checked["mask_values"] = tuple(values)
    elif "mask_values" in keys:
        raise ConfigError(f"{config_path}: mask_values is given without mask = \"...\"")
    if "composite" in keys:
        if keys["composite"] not in COMPOSITES:
            raise ConfigError(f"{config_path}: composite = {keys['composite']!r}; use one of "
                              f"{', '.join(map(repr, COMPOSITES))}")
        checked["composite"] = keys["composite"]
    return checked


def _check_name(name, config_path: Path) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or name in (".", ".."):
        raise ConfigError(f"{config_path}: name = {name!r} must be a plain folder name (letters, digits, '-', "
                          f"'_', '.'; 1 to 64 characters; not '.' or '..')")
    return name


def input_path(base: Path, value, key: str, config_path: Path) -> Path | str:
    """An input path of the TOML, relative to the TOML's folder; GDAL virtual paths (``/vsizip/...``) as given."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{config_path}: {key} = {value!r} must be a file path")
    if value.startswith("/vsi"):
        return value
    return ordinary_path((base / value).resolve(), f"{config_path}: {key}")


def ordinary_path(path: Path, what: str) -> Path:
    """``path`` if it is a file, a folder or nothing yet; a FIFO, device or socket (which would block or never
    end when read) is a one-line error naming ``what``."""
    import stat

    try:
        mode = path.stat().st_mode
    except OSError:
        return path
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise ConfigError(f"{what} = {path} is not a file or folder (a FIFO, device or socket); give a file")
    return path


def _read_toml(config_path: Path) -> dict:
    if not config_path.is_file():
        raise InputFileError(f"{config_path}: configuration file not found")
    try:
        return tomllib.loads(config_path.read_text(encoding="utf-8-sig"))  # a byte-order mark is allowed
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{config_path}: not valid TOML ({error})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{config_path}: not UTF-8 text; save it as UTF-8") from None


def _section_values(config: dict, config_path: Path) -> dict:
    """Parameter name -> value of the TOML's parameter sections, refusing unknown sections and names."""
    rules = Parameters.rules()
    sections = {rule.section for rule, _ in rules.values()}
    values, shared_seed = {}, _shared_seed(config, config_path)
    for section, table in config.items():
        if section in (*SCENE_KEYS, "run"):
            continue
        if section not in sections or not isinstance(table, dict):
            raise ConfigError(f"{config_path}: unknown key '{section}'"
                              f"{did_you_mean(section, [*SCENE_KEYS, 'run', *sections])}; keys are "
                              f"{', '.join(SCENE_KEYS)} and the sections {', '.join(sorted({'run', *sections}))}")
        for key, value in table.items():
            name = RENAMED.get(key, key)
            if name in rules and rules[name][0].section != section:
                raise ConfigError(f"{config_path}: parameter '{key}' belongs in [{rules[name][0].section}], not in "
                                  f"[{section}]")
            if name not in rules:
                known = [other for other, (rule, _) in rules.items() if rule.section == section]
                raise ConfigError(f"{config_path}: unknown parameter '{key}' in [{section}]{did_you_mean(key, known)}; "
                                  f"its parameters are {', '.join(known)}")
            values[name] = check_value(key, value, *rules[name], str(config_path))
    return {**{name: shared_seed for name in SEEDS if shared_seed is not None}, **values}


def _shared_seed(config: dict, config_path: Path) -> int | None:
    """``seed`` under ``[run]``, the default of every seed of :data:`SEEDS` (None if not given)."""
    table = config.get("run", {})
    unknown = sorted(set(table) - {"seed"}) if isinstance(table, dict) else ["run"]
    if unknown:
        raise ConfigError(f"{config_path}: unknown parameter '{unknown[0]}' in [run]"
                          f"{did_you_mean(unknown[0], ['seed'])}; its only parameter is seed, the default of "
                          f"{', '.join(SEEDS)}")
    if "seed" not in table:
        return None
    return check_value("seed", table["seed"], *Parameters.rules()[SEEDS[0]], str(config_path))


def did_you_mean(word: str, candidates) -> str:
    """`` (did you mean 'x'?)`` for the candidate closest to a misspelt ``word``, or nothing if none is close.

    >>> did_you_mean("clases", ["classes", "bands"]), did_you_mean("zzz", ["classes"])
    (" (did you mean 'classes'?)", '')
    """
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _check_bands(bands, config_path: Path) -> dict:
    """Layer name -> 1-based band number or band name: the tutorial's 5 bands (roles left out are taken from a
    Sentinel-2 product's defaults, B02, B03, B04, B08, B11, and must be given for an ordinary raster, checked in
    Step 0) and any of the further bands ``EXTRA_BANDS`` (B05, B06, B07, B8A, B12), which become layers too."""
    if not isinstance(bands, dict):
        raise ConfigError(f"{config_path}: [bands] must map layer names to band numbers or band names")
    known = (*LAYER_NAMES, *EXTRA_BANDS)
    unknown = [name for name in bands if name not in known]
    if unknown:
        raise ConfigError(f"{config_path}: unknown band name(s) {unknown} in [bands]; use {', '.join(known)}")
    for name, band in bands.items():
        if isinstance(band, bool) or not (isinstance(band, int) and band >= 1 or isinstance(band, str) and band):
            raise ConfigError(f"{config_path}: [bands] {name} = {band!r} must be a 1-based band number or a band "
                              f"name (e.g. \"B11\" or a band description)")
    return dict(bands)


def _check_aoi(aoi, base: Path, config_path: Path):
    """None, a {bbox, crs} table, or a vector file path relative to the TOML."""
    if aoi is None or isinstance(aoi, dict):
        return aoi
    if isinstance(aoi, str) and aoi:
        return input_path(base, aoi, "aoi", config_path)
    raise ConfigError(f"{config_path}: aoi = {aoi!r} must be a table {{bbox = [xmin, ymin, xmax, ymax], "
                      f"crs = \"EPSG:4326\"}} or a vector file path")


def _check_field(field, config_path: Path, key: str = "reference_field") -> str | None:
    if field is None or isinstance(field, str) and field:
        return field
    raise ConfigError(f"{config_path}: {key} = {field!r} must be the name of an attribute")


def _check_title(title, config_path: Path) -> str | None:
    """The optional ``title``: one line of 1 to 200 characters."""
    if title is None:
        return None
    if not isinstance(title, str) or not title.strip() or len(title) > 200 or "\n" in title:
        raise ConfigError(f"{config_path}: title = {title!r} must be one line of text (1 to 200 characters), e.g. "
                          f"title = \"Aberystwyth, May 2021\"")
    return title.strip()


def _check_descriptions(descriptions, classes, config_path: Path) -> dict:
    """The optional ``[descriptions]`` table: class name -> a short text saying what the class holds in this
    scene (``crop = "improved pasture"``); every key must be a class of ``[classes]``."""
    if not isinstance(descriptions, dict):
        raise ConfigError(f"{config_path}: descriptions must be a table [descriptions] of class name = \"text\"")
    names = list(classes) if isinstance(classes, dict) else []
    for name, text in descriptions.items():
        if name not in names:
            raise ConfigError(f"{config_path}: [descriptions] names '{name}', which is no class of [classes]"
                              f"{did_you_mean(name, names)}; the classes are {', '.join(names)}")
        if not isinstance(text, str) or not text.strip() or len(text) > 200 or "\n" in text:
            raise ConfigError(f"{config_path}: [descriptions] {name} = {text!r} must be one line of text (1 to 200 "
                              f"characters)")
    return {name: text.strip() for name, text in descriptions.items()}


def _check_classes(classes, config_path: Path) -> dict:
    if not isinstance(classes, dict) or len(classes) < 2:
        raise ConfigError(f"{config_path}: [classes] must map at least 2 class names to reference values")
    if len(classes) >= 255:
        raise ConfigError(f"{config_path}: [classes] may hold at most 254 classes")
    seen, checked = {}, {}
    for name, values in classes.items():
        if not CLASS_NAME_PATTERN.fullmatch(name):
            raise ConfigError(f"{config_path}: class name {name!r} must be 1 to 64 printable characters without "
                              f"leading or trailing blanks, tabs or newlines")
        values = [values] if isinstance(values, (int, str)) else values
        if not isinstance(values, list) or not values or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 or isinstance(v, str) and v for v in values):
            raise ConfigError(f"{config_path}: [classes] {name} = {values!r} must list reference values (integers "
                              f">= 0, or attribute values of a vector reference)")
        for value in values:
            if value in seen:
                raise ConfigError(f"{config_path}: reference value {value} is given to both {seen[value]} and {name}")
            seen[value] = name
        checked[name] = values
    return checked
