"""What the tests build their scenes from, imported by name: the one scene-TOML builder (write_scene) and the test
scenes' step parameters (settings() as TOML, flags() as command-line flags), the real 324x339 Aberystwyth subset,
tiny rasters, Sentinel-2-like products, rasters and polygons made from a crop of the demo mosaic, the checks the
tests share (one-line errors, COG layout, snapshots), and a real Dask cluster on localhost. The fixtures are in
``conftest.py``."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, ogr, osr
from scipy import ndimage

from pipeline.core.vocabulary import LAYER_NAMES
from pipeline.handoffs.model_card import ModelCard

PROJECT = Path(__file__).resolve().parents[1]
DATA = PROJECT.parent / "shared" / "data" / "aberystwyth_s2"
SUBSET = DATA / "sen2_20210527_aber_subset.tif"
REFERENCE_930 = DATA / "sen2_20210527_aber_cls_930.tif"
SUBSET_WINDOW = (289, 52)  # PROVENANCE.md: the subset equals mosaic rows 289-627, cols 52-375

gdal.UseExceptions()


def write_tif(path: Path, array: np.ndarray, geotransform=(500000.0, 10.0, 0.0, 6000000.0, 0.0, -10.0),
              epsg: int = 32630, nodata=None) -> Path:
    """Write a (bands, rows, cols) or (rows, cols) array as a GeoTIFF in a UTM CRS."""
    from osgeo import gdal_array

    array = array[np.newaxis] if array.ndim == 2 else array
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), array.shape[2], array.shape[1], array.shape[0],
                                                   gdal_array.NumericTypeCodeToGDALTypeCode(array.dtype))
    dataset.SetGeoTransform(geotransform)
    crs = osr.SpatialReference()
    crs.ImportFromEPSG(epsg)
    dataset.SetProjection(crs.ExportToWkt())
    for i, band in enumerate(array):
        dataset.GetRasterBand(i + 1).WriteArray(band)
        if nodata is not None:
            dataset.GetRasterBand(i + 1).SetNoDataValue(nodata)
    dataset = None
    return path


#: Band numbers and class values of the 10-band Aberystwyth layout (the subset, the demo scene, the quadrant scene).
ABERYSTWYTH_BANDS = {"blue": 1, "green": 2, "red": 3, "nir": 7, "swir": 9}
ABERYSTWYTH_CLASSES = {"urban": [3], "crop": [2], "vegetation": [1], "water": [4]}

# Step parameters of the test scenes, for settings() and flags(): name -> value; the parameters not named keep the
# pipeline's defaults (pipeline.run.parameters.Parameters).
#: The 64 x 64 px quadrant scene.
QUADRANT_PARAMETERS = {"n_segments": 64, "patch_width": 19, "block_size": 16, "per_class": 20, "epochs": 1,
                       "min_training_superpixels": 1}  # 1 training superpixel of water
#: The real 324 x 339 px subset, small for fast runs.
SUBSET_PARAMETERS = {"n_segments": 1500, "block_size": 64, "per_class": 150, "epochs": 3, "batch_size": 32}
#: Each half of the 930 x 947 px demo scene cut as a scene of its own (test_apply_model.py).
HALF_DEMO_PARAMETERS = {"n_segments": 6000, "block_size": 64, "per_class": 300, "epochs": 3}
#: The 200 x 200 px crop of the demo mosaic, through Step 0 (test_step0_sources.py).
CROP_PARAMETERS = {"n_segments": 400, "patch_width": 19, "block_size": 32}
#: The whole demo scene, its own TOML with these as flags (test_tiled.py).
DEMO_PARAMETERS = {"per_class": 1000, "epochs": 6}


def toml_value(value) -> str:
    """``value`` (text, path, number, true or false, list, or dict as an inline table) as TOML."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(key)} = {toml_value(item)}" for key, item in value.items()) + "}"
    return json.dumps(str(value) if isinstance(value, Path) else value, ensure_ascii=False)


def toml_key(key: str) -> str:
    """``key`` bare where TOML allows it, else quoted."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def toml_table(name: str, values: dict) -> str:
    """A TOML table ``[name]`` of ``values``."""
    return f"[{name}]\n" + "".join(f"{toml_key(key)} = {toml_value(value)}\n" for key, value in values.items())


def settings(**parameters) -> str:
    """TOML sections setting ``parameters`` (name -> value), each in the section the pipeline reads it from."""
    from pipeline.run.config import Parameters

    rules = Parameters.rules()
    sections: dict = {}
    for name, value in parameters.items():
        sections.setdefault(rules[name][0].section, {})[name] = value
    return "".join(toml_table(section, values) for section, values in sections.items())


def flags(**parameters) -> list[str]:
    """The command-line flags setting ``parameters`` (name -> value), named as the steps name them."""
    return [item for name, value in parameters.items() for item in ("--" + name.replace("_", "-"), str(value))]


def write_scene(path: Path, image, reference=None, parameters: dict | None = None, *, name: str = "test",
                bands: dict = ABERYSTWYTH_BANDS, classes: dict = ABERYSTWYTH_CLASSES, **keys) -> Path:
    """Write a scene TOML: ``name``, ``image``, ``reference`` (None: a scene without one), further top-level
    ``keys`` (such as ``aoi``), the ``bands`` and ``classes`` tables and the sections of the step ``parameters``."""
    top_level = {"name": name, "image": image, **({} if reference is None else {"reference": reference}), **keys}
    path.write_text("".join(f"{toml_key(key)} = {toml_value(value)}\n" for key, value in top_level.items())
                    + toml_table("bands", bands) + toml_table("classes", classes) + settings(**(parameters or {})))
    return path


# --- Products, rasters and polygons made from a crop of the demo mosaic -----------------------------------------

MOSAIC = DATA / "sen2_20210527_aber_rebuilt.tif"
CROP_COL, CROP_ROW, CROP_SIZE = 80, 300, 200          # crop of the mosaic: town, sea, grass and forest
STACK_BANDS = {"B02": 1, "B03": 2, "B04": 3, "B08": 7, "B11": 9, "B12": 10}
CLASS_VALUES = {"forest": [1], "grass": [2], "urban": [3], "water": [4]}
CLASS_NAMES = {1: "forest", 2: "grass", 3: "urban", 4: "water"}
STAMP = "T30UVD_20210527T113321"
NODATA_BLOCK = (slice(0, 20), slice(0, 40))   # whole 20 m pixels set to DN 0 in every band


def mem_raster(array, geotransform, wkt, nodata=None):
    """A one-band GDAL MEM dataset holding a uint8, uint16 or uint32 ``array``."""
    types = {np.dtype(np.uint8): gdal.GDT_Byte, np.dtype(np.uint16): gdal.GDT_UInt16,
             np.dtype(np.uint32): gdal.GDT_UInt32}
    dataset = gdal.GetDriverByName("MEM").Create("", array.shape[1], array.shape[0], 1, types[array.dtype])
    dataset.SetGeoTransform(geotransform)
    dataset.SetProjection(wkt)
    dataset.GetRasterBand(1).WriteArray(array)
    if nodata is not None:
        dataset.GetRasterBand(1).SetNoDataValue(nodata)
    return dataset


def write_jp2(path: Path, dn: np.ndarray, geotransform, wkt) -> None:
    """Write DN as a lossless uint16 JPEG 2000 band file, as in a product."""
    path.parent.mkdir(parents=True, exist_ok=True)
    gdal.GetDriverByName("JP2OpenJPEG").CreateCopy(str(path), mem_raster(dn.astype(np.uint16), geotransform, wkt),
                                                   options=["QUALITY=100", "REVERSIBLE=YES"])


def band_dn(crop_scene, name, add):
    """DN of a band: reflectance * 10000 + add; 20 m bands as 2x2 block means; DN 0 in the nodata block."""
    values = crop_scene["values"][name] * 10           # x1000 -> x10000
    if name in ("B11", "B12"):
        values = np.rint(values.reshape(CROP_SIZE // 2, 2, CROP_SIZE // 2, 2).mean(axis=(1, 3))).astype(np.int64)
        dn = values + add
        rows, cols = NODATA_BLOCK
        dn[rows.start // 2:rows.stop // 2, cols.start // 2:cols.stop // 2] = 0
        return dn
    dn = values + add
    dn[NODATA_BLOCK] = 0
    return dn


def product_metadata(level: str, offset: int) -> str:
    """Text of an MTD_MSIL1C.xml or MTD_MSIL2A.xml (baseline 04.00, quantification 10000, ``offset`` per band)."""
    l2 = level == "L2A"
    quant = "BOA_QUANTIFICATION_VALUE" if l2 else "QUANTIFICATION_VALUE"
    tag = "BOA_ADD_OFFSET" if l2 else "RADIO_ADD_OFFSET"
    offsets = "".join(f'<{tag} band_id="{i}">{offset}</{tag}>' for i in range(13))
    return (f'<?xml version="1.0" encoding="UTF-8"?><n1:Level-{level[1:]}_User_Product xmlns:n1="https://psd-14">'
            f"<n1:General_Info><Product_Info><PROCESSING_BASELINE>04.00</PROCESSING_BASELINE>"
            f"<PRODUCT_TYPE>S2MSI{level[1:]}</PRODUCT_TYPE></Product_Info><Product_Image_Characteristics>"
            f'<{quant} unit="none">10000</{quant}><Offsets>{offsets}</Offsets>'
            f"</Product_Image_Characteristics></n1:General_Info></n1:Level-{level[1:]}_User_Product>")


def write_product(root: Path, crop_scene, level: str | None, names=tuple(STACK_BANDS)) -> Path:
    """Write a product-like folder: L1C or L2A layout with metadata (offset -1000), or None: plain folder."""
    gt10 = crop_scene["geotransform"]
    gt20 = (gt10[0], 20.0, 0.0, gt10[3], 0.0, -20.0)
    add = 1000 if level else 0
    granule = root / "GRANULE" / f"{level}_T30UVD_A031000_20210527T113321" / "IMG_DATA" if level else root
    for name in names:
        coarse = name in ("B11", "B12")
        if level == "L2A":
            path = granule / ("R20m" if coarse else "R10m") / f"{STAMP}_{name}_{20 if coarse else 10}m.jp2"
        else:
            path = granule / f"{STAMP}_{name}.jp2"
        write_jp2(path, band_dn(crop_scene, name, add), gt20 if coarse else gt10, crop_scene["wkt"])
    if level == "L2A":   # a coarser copy of B02 the reader must not prefer over the 10 m file
        b02 = band_dn(crop_scene, "B02", add).reshape(CROP_SIZE // 2, 2, CROP_SIZE // 2, 2).mean(axis=(1, 3))
        write_jp2(granule / "R20m" / f"{STAMP}_B02_20m.jp2", np.rint(b02), gt20, crop_scene["wkt"])
    if level:
        (root / f"MTD_MSI{level}.xml").write_text(product_metadata(level, -1000))
    return root


def zip_folder(folder: Path) -> Path:
    """Zip ``folder`` (stored, with the folder as the top entry) beside it; returns the zip."""
    target = folder.with_suffix(".zip")
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(folder.rglob("*")):
            archive.write(path, Path(folder.name) / path.relative_to(folder))
    return target


def codes_of(labels):
    """The class codes Step 0 makes of the demo labels 1..4 with CLASS_VALUES: value - 1, 0 -> 255."""
    return np.where(labels > 0, labels.astype(np.int64) - 1, 255)


def interior(labels, radius):
    """Pixels whose (2 radius + 1)^2 neighbourhood has one class: away from class edges."""
    size = 2 * radius + 1
    return ndimage.maximum_filter(labels, size) == ndimage.minimum_filter(labels, size)


def small_polygons(labels, per_class: dict, side: int, seed: int = 0):
    """A sparse reference drawn from ``labels``, as by hand: ``per_class[value]`` squares of ``side`` px (odd) of
    class ``value``, centred at random (seeded) pixels of its :func:`interior`, so each square holds one class;
    0 elsewhere (uint8, the shape of ``labels``)."""
    rng = np.random.default_rng(seed)
    pure = interior(labels, side // 2)
    centres = np.zeros(labels.shape, np.uint8)
    for value, count in per_class.items():
        centres.flat[rng.choice(np.flatnonzero(pure & (labels == value)), count, replace=False)] = value
    return ndimage.maximum_filter(centres, side)


def polygonize(path: Path, reference: Path, *, per_class_layers=False, srs=None) -> Path:
    """Polygonize the labels: one layer with a string field 'landcover', or one layer per class name."""
    dataset = gdal.Open(str(reference))
    band = dataset.GetRasterBand(1)
    memory = ogr.GetDriverByName("Memory").CreateDataSource("")
    layer = memory.CreateLayer("all", dataset.GetSpatialRef(), ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("value", ogr.OFTInteger))
    gdal.Polygonize(band, band.GetMaskBand(), layer, 0)
    target_srs = srs or dataset.GetSpatialRef()
    transform = osr.CoordinateTransformation(dataset.GetSpatialRef(), target_srs)
    out = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layers = {}
    for feature in layer:
        name = CLASS_NAMES[feature.GetField("value")]
        key = name if per_class_layers else "landcover"
        if key not in layers:
            layers[key] = out.CreateLayer(key, target_srs, ogr.wkbPolygon)
            layers[key].CreateField(ogr.FieldDefn("landcover", ogr.OFTString))
        geometry = feature.GetGeometryRef().Clone()
        geometry.Transform(transform)
        new = ogr.Feature(layers[key].GetLayerDefn())
        new.SetField("landcover", name)
        new.SetGeometry(geometry)
        layers[key].CreateFeature(new)
    out = None
    return path


# --- shared checks and scenes of several test modules ---------------------------------------------------

def assert_one_line(error: str, fragments) -> None:
    """``error`` (stderr) is one line ``error: ...`` holding every fragment (a tuple: any of its members)."""
    assert error.startswith("error: ") and error.endswith("\n") and error.count("\n") == 1, (
        f"stderr is not one 'error: ' line:\n{error[-3000:]}")
    for fragment in fragments:
        options = fragment if isinstance(fragment, tuple) else (fragment,)
        assert any(str(o).lower() in error.lower() for o in options), f"{fragment!r} missing from {error!r}"


SCRIPTS = {0: "Step0_Data_Preparation.py", 1: "Step1_Class_Balance.py", 2: "Step2_Model_Training.py",
           3: "Step3_Accuracy_Assessment.py"}


def run_script(step: int, argv, timeout: float, cwd: Path, env=None, preexec_fn=None):
    """Run a step script in its own process group; (exit code, stdout, stderr, seconds). Kills the group and
    fails the test after ``timeout`` seconds."""
    start = time.monotonic()
    process = subprocess.Popen([sys.executable, str(PROJECT / SCRIPTS[step]), *map(str, argv)], cwd=cwd, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=preexec_fn)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"{SCRIPTS[step]} still running after {timeout:.0f} s (killed); stderr: {err[-1500:]!r}",
                    pytrace=False)
    return process.returncode, out, err, time.monotonic() - start


def fails_with_one_line(main, arguments, capsys, *fragments) -> str:
    """Run a step's ``main(arguments)``; check exit code 1 and one stderr line holding every fragment."""
    assert main(arguments) == 1
    error = capsys.readouterr().err
    assert_one_line(error, fragments)
    return error


def label_file(path, codes, grid, names, field="reference", value=None):
    """Fill the field of every point of a designed GeoPackage from the reference raster (as a person in QGIS)."""
    dataset = gdal.OpenEx(str(path), gdal.OF_VECTOR | gdal.OF_UPDATE)
    layer = dataset.GetLayer(0)
    x0, dx, _, y0, _, dy = grid.geotransform
    for feature in layer:
        point = feature.GetGeometryRef()
        code = codes[int((point.GetY() - y0) // dy), int((point.GetX() - x0) // dx)]
        feature.SetField(field, value if value is not None else names[code])
        layer.SetFeature(feature)
    dataset = None


def snapshot(folder):
    """Name -> SHA-256 of every file in a folder."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def gdalinfo(path) -> str:
    """gdalinfo's report: the command where it is installed, else the same report from the bindings."""
    if shutil.which("gdalinfo"):
        return subprocess.run(["gdalinfo", str(path)], check=True, capture_output=True, text=True).stdout
    return gdal.Info(str(path))


def qml_classes(path) -> list[tuple[str, str, str]]:
    """(value, label, colour) of every palette entry of a QGIS raster style."""
    renderer = ET.parse(path).getroot().find("pipe/rasterrenderer")
    assert renderer.get("type") == "paletted" and renderer.get("band") == "1"
    return [(e.get("value"), e.get("label"), e.get("color")) for e in renderer.findall("colorPalette/paletteEntry")]


def assert_cog(path, overviews: bool) -> None:
    """``path`` is a Cloud-Optimized GeoTIFF, with overviews where asked (GDAL makes them for rasters over 512 px)."""
    report = gdalinfo(path)
    assert "LAYOUT=COG" in report, path.name
    assert ("Overviews:" in report) == overviews, path.name


def quadrant_scene(folder, image_dtype=np.uint16):
    """A 64 x 64 px, 10-band image of four spectrally distinct quadrants and its 4-class reference."""
    rng = np.random.default_rng(0)
    spectra = {3: [900, 900, 900, 900, 900, 900, 1000, 1000, 1100, 1000],  # urban: bright, SWIR high
               2: [300, 500, 300, 800, 2500, 3000, 3500, 3500, 1500, 800],  # crop: NIR high
               1: [200, 300, 200, 500, 1800, 2200, 2500, 2500, 900, 400],  # vegetation: darker
               4: [400, 300, 200, 100, 80, 70, 60, 60, 30, 20]}  # water: NIR and SWIR low
    reference = np.zeros((64, 64), np.uint8)
    reference[:32, :32], reference[:32, 32:], reference[32:, :32], reference[32:, 32:] = 3, 2, 1, 4
    image = np.stack([np.vectorize(lambda code: spectra[code][band])(reference) for band in range(10)])
    image = (image * rng.uniform(0.95, 1.05, size=image.shape)).astype(image_dtype)
    return image, reference


#: A model card of a made-up training run on the scene "north" (urban and water; red and mask channels).
CARD = ModelCard(model_run="a" * 32, scene="north", layer_names=LAYER_NAMES, train_layers=("red", "mask"),
                 patch_width=25, class_names=("urban", "water"), class_colours=((255, 248, 18), (31, 59, 255)),
                 stretch_limits={name: (0.0, 0.5) for name in LAYER_NAMES}, stretch_unit="reflectance",
                 prior_shares=(0.75, 0.25), prior_correction=True, parameters={"seed": 42},
                 preparation={"dates": 1, "composite": "median", "masking": True}, step0_run="b" * 32,
                 step1_run="c" * 32)


# --- a real Dask cluster on localhost ----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def dask_cluster(folder: Path, workers: int):
    """A real distributed cluster on 127.0.0.1: a ``dask scheduler`` and ``workers`` ``dask worker`` processes (one
    thread each, nanny included) started from the command line as on separate machines, each in its own process
    group (``os.killpg`` stops a worker with its nanny), the project importable on the workers, their files in
    ``folder``. Yields the scheduler's address and the processes, scheduler first, once every worker is up; kills
    what is left of them afterwards."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    environment = {**os.environ, "PYTHONPATH": str(PROJECT)}

    def start(*command):
        return subprocess.Popen([sys.executable, "-m", *command, "--no-dashboard"], cwd=folder, env=environment,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    processes = [start("distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port))]
    try:
        for number in range(1, workers + 1):
            processes.append(start("distributed.cli.dask_worker", address, "--nthreads", "1", "--local-directory",
                                   str(folder / f"worker{number}"), "--name", f"worker{number}"))
        from dask.distributed import Client

        with Client(address, timeout="60s") as client:
            client.wait_for_workers(workers, timeout=60)
        yield address, processes
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
