"""A second adversarial pass, guarantee by guarantee: special files never block, any path gives one line, every
value read from product metadata or the TOML is checked where it is parsed, SLIC's size is checked before it
allocates, names reach figures as text, and the aoi and reference field are part of Step 0's provenance."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest

import Step0_Data_Preparation as step0
import Step1_Class_Balance as step1
import Step3_Accuracy_Assessment as step3
from builders import (CLASS_VALUES, PROJECT, QUADRANT_PARAMETERS, assert_one_line, fails_with_one_line,
                      quadrant_scene, snapshot, write_product, write_scene, write_tif)
from pipeline.handoffs import contract
from pipeline.core.errors import InputDataError
from pipeline.core.geotiff_options import STAGING_IN_MEMORY_BYTES
from pipeline.inputs.sentinel2 import _parse_metadata


@pytest.fixture
def scene(tmp_path):
    image, reference = quadrant_scene(tmp_path)
    folder = tmp_path / "scene"
    folder.mkdir()
    write_tif(folder / "image.tif", image)
    write_tif(folder / "reference.tif", reference)
    return {"folder": folder, "config": write_scene(folder / "scene.toml", "image.tif", "reference.tif",
                                                    QUADRANT_PARAMETERS)}


def run_step(arguments, timeout=120):
    """A step in a child process, bounded in time: (exit code, stderr)."""
    result = subprocess.run([sys.executable, *arguments], cwd=PROJECT, capture_output=True, text=True,
                            timeout=timeout)
    return result.returncode, result.stderr


@pytest.mark.parametrize("role", ["image", "reference", "mask"])
def test_a_fifo_among_the_inputs_is_refused_at_once(scene, tmp_path, role):
    fifo = tmp_path / f"{role}.fifo"
    os.mkfifo(fifo)
    keys = {"mask": str(fifo), "mask_values": [1]} if role == "mask" else {}
    config = write_scene(scene["folder"] / "fifo.toml", str(fifo) if role == "image" else "image.tif",
                         str(fifo) if role == "reference" else "reference.tif", QUADRANT_PARAMETERS, **keys)
    before = snapshot(scene["folder"])
    code, error = run_step(["Step0_Data_Preparation.py", "--config", str(config), "--workdir", str(tmp_path / "w")],
                           timeout=60)
    assert code == 1
    assert_one_line(error, [role, "not a file or folder", "FIFO"])
    assert snapshot(scene["folder"]) == before


def test_a_fifo_given_as_a_flag_is_refused(scene, tmp_path):
    fifo = tmp_path / "model.keras"
    os.mkfifo(fifo)
    code, error = run_step(["Step0_Data_Preparation.py", "--config", str(scene["config"]), "--workdir",
                            str(tmp_path / "w"), "--stretch-from", str(fifo)], timeout=60)
    assert code == 1
    assert_one_line(error, ["--stretch-from", "FIFO"])


@pytest.mark.parametrize("name", ["new\nline.tif", "tab\tand\rreturn.tif", "bell\a.tif"])
def test_any_path_gives_one_line(scene, capsys, name):
    config = write_scene(scene["folder"] / "odd.toml", name, "reference.tif", QUADRANT_PARAMETERS)
    error = fails_with_one_line(step0.main, ["--config", str(config), "--workdir", str(scene["folder"] / "w")],
                                capsys, "file not found")
    assert repr(name)[1:-1].split("\\")[0] in error


def metadata(quantification="10000", baseline="04.00", offsets=('<BOA_ADD_OFFSET band_id="1">-1000</BOA_ADD_OFFSET>',)):
    text = (f"<r><PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>"
            f"<BOA_QUANTIFICATION_VALUE>{quantification}</BOA_QUANTIFICATION_VALUE>{''.join(offsets)}</r>")
    return ElementTree.fromstring(text)


@pytest.mark.parametrize("tree, fragments", [
    (metadata(quantification="0"), ("BOA_QUANTIFICATION_VALUE = '0'", "above 0")),
    (metadata(quantification="n/a"), ("BOA_QUANTIFICATION_VALUE = 'n/a'", "not a number")),
    (metadata(quantification="inf"), ("'inf'", "not a number")),
    (metadata(baseline="four"), ("PROCESSING_BASELINE = 'four'",)),
    (metadata(baseline="4.0.1"), ("PROCESSING_BASELINE = '4.0.1'",)),
    (metadata(baseline="nan"), ("PROCESSING_BASELINE = 'nan'",)),
    (metadata(baseline=" "), ("PROCESSING_BASELINE is empty",)),
    (metadata(offsets=('<BOA_ADD_OFFSET band_id="13">-1000</BOA_ADD_OFFSET>',)), ("band_id = '13'",)),
    (metadata(offsets=('<BOA_ADD_OFFSET band_id="2"></BOA_ADD_OFFSET>',)), ("BOA_ADD_OFFSET = None", "not a number")),
    (metadata(offsets=('<BOA_ADD_OFFSET band_id="2">minus</BOA_ADD_OFFSET>',)), ("'minus'",)),
])
def test_product_metadata_values_are_checked_where_they_are_read(tree, fragments):
    with pytest.raises(InputDataError) as raised:
        _parse_metadata("S2.SAFE/MTD_MSIL2A.xml", tree)
    message = str(raised.value)
    assert "\n" not in message and message.startswith("S2.SAFE/MTD_MSIL2A.xml: ")
    assert all(fragment in message for fragment in fragments), message


def test_a_baseline_as_in_product_names_is_read():
    assert _parse_metadata("MTD_MSIL2A.xml", metadata(baseline="N0400"))["offsets"] == {"B02": -1000.0}
    assert _parse_metadata("MTD_MSIL2A.xml", metadata(baseline="N0300"))["offsets"] == {}


@pytest.mark.parametrize("aoi, fragments", [
    ({"bbox": ["0", 0, 1, 1]}, ("aoi bbox", "finite numbers")),
    ({"bbox": [0, 0, float("inf"), 1]}, ("aoi bbox", "finite numbers")),
    ({"bbox": [0, 0, True, 1]}, ("aoi bbox",)),
    ({"bbox": [500000, 5999400, 500300, 6000000], "crs": 4326}, ("aoi crs = 4326", "text")),
])
def test_aoi_forms_are_one_line_errors(scene, capsys, aoi, fragments):
    text = scene["config"].read_text().replace("[bands]", f"aoi = {toml_inline(aoi)}\n[bands]", 1)
    (scene["folder"] / "aoi.toml").write_text(text)
    fails_with_one_line(step0.main, ["--config", str(scene["folder"] / "aoi.toml"), "--workdir",
                                     str(scene["folder"] / "w")], capsys, *fragments)


def toml_inline(aoi: dict) -> str:
    """An aoi table as TOML, infinity included (which JSON cannot write)."""
    values = ", ".join("inf" if v == float("inf") else ("true" if v is True else repr(v).replace("'", '"'))
                       for v in aoi["bbox"])
    crs = f", crs = {aoi['crs']}" if "crs" in aoi else ""
    return f"{{bbox = [{values}]{crs}}}"


def test_more_superpixels_than_pixels_is_refused_before_slic(scene, capsys):
    config = write_scene(scene["folder"] / "many.toml", "image.tif", "reference.tif",
                         {**QUADRANT_PARAMETERS, "n_segments": 10**9})
    fails_with_one_line(step0.main, ["--config", str(config), "--workdir", str(scene["folder"] / "w")], capsys,
                        "n_segments = 1000000000", "4096 px")


def test_class_names_reach_the_figures_as_text_without_warnings(tmp_path, capsys):
    image, reference = quadrant_scene(tmp_path)
    classes = {"$urban$ (x_1)": [3], "crop": [2], "城市 vegetation": [1], "water 🌊": [4]}
    config = write_scene(tmp_path / "names.toml", write_tif(tmp_path / "image.tif", image),
                         write_tif(tmp_path / "reference.tif", reference), QUADRANT_PARAMETERS, classes=classes)
    assert step0.main(["--config", str(config), "--workdir", str(tmp_path / "w")]) == 0
    assert capsys.readouterr().err == ""
    assert (tmp_path / "w" / "example_patches.png").stat().st_size > 0


@pytest.mark.parametrize("change", ["aoi", "reference_field"])
def test_later_steps_refuse_step0_outputs_after_the_aoi_or_the_field_changed(scene, capsys, change):
    workdir = scene["folder"] / "w"
    assert step0.main(["--config", str(scene["config"]), "--workdir", str(workdir)]) == 0
    capsys.readouterr()
    line = ("aoi = {bbox = [500000, 5999500, 500500, 6000000]}" if change == "aoi" else 'reference_field = "class"')
    scene["config"].write_text(scene["config"].read_text().replace("[bands]", f"{line}\n[bands]", 1))
    fails_with_one_line(step1.main, ["--config", str(scene["config"]), "--workdir", str(workdir)], capsys,
                        "other settings", change, "rerun Step0")


def vector_in_sources(workdir, name: str, driver: str, polygon: str | None = None):
    """A one-layer vector file ``name`` inside ``workdir/sources/`` (the folder Step 0 replaces), with an
    integer field ``value`` and, if given, one ``polygon`` (WKT)."""
    from osgeo import ogr

    path = workdir / "sources" / name
    path.parent.mkdir(parents=True)
    source = ogr.GetDriverByName(driver).CreateDataSource(str(path))
    layer = source.CreateLayer(path.stem, None, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("value", ogr.OFTInteger))
    if polygon:
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetGeometry(ogr.CreateGeometryFromWkt(polygon))
        layer.CreateFeature(feature)
    source = None
    return path


def test_an_aoi_file_inside_the_folder_step0_replaces_is_refused(scene, capsys):
    workdir = scene["folder"] / "w"
    aoi = vector_in_sources(workdir, "aoi.gpkg", "GPKG", "POLYGON ((500000 5999500, 500500 5999500, 500500 6000000, "
                                                        "500000 6000000, 500000 5999500))")
    scene["config"].write_text(scene["config"].read_text().replace("[bands]", f'aoi = "{aoi}"\n[bands]', 1))
    before = aoi.read_bytes()
    fails_with_one_line(step0.main, ["--config", str(scene["config"]), "--workdir", str(workdir)], capsys,
                        "aoi.gpkg", "is an input", "sources/")
    assert aoi.read_bytes() == before


def test_shapefile_side_files_are_inputs_too(scene, capsys):
    workdir = scene["folder"] / "w"
    shapefile = vector_in_sources(workdir, "labels.shp", "ESRI Shapefile")
    side_files = snapshot(shapefile.parent)
    assert {".dbf", ".shx"} <= {name.rsplit("/", 1)[-1][-4:] for name in side_files}
    config = write_scene(scene["folder"] / "shp.toml", "image.tif", str(shapefile), QUADRANT_PARAMETERS,
                         reference_field="value")
    fails_with_one_line(step0.main, ["--config", str(config), "--workdir", str(workdir)], capsys,
                        "is an input", "sources/")
    assert snapshot(shapefile.parent) == side_files


def test_a_work_folder_inside_an_input_product_is_refused_before_any_write(tmp_path, crop_scene, crop_files, capsys):
    product = write_product(tmp_path / "S2A_MSIL2A_T30UVD.SAFE", crop_scene, "L2A")
    config = write_scene(tmp_path / "s2.toml", str(product), crop_files[1], QUADRANT_PARAMETERS, classes=CLASS_VALUES,
                         bands={})
    before = snapshot(product)
    for workdir in (product, product / "GRANULE" / "work"):
        fails_with_one_line(step0.main, ["--config", str(config), "--workdir", str(workdir)], capsys,
                            "is inside the input", "--workdir")
        assert snapshot(product) == before and not (product / "GRANULE" / "work").exists()


def test_orphaned_staging_folders_in_a_shared_folder_go_and_live_ones_stay(tmp_path):
    from pipeline.run.outputs import STAGING_PREFIX, OutputSet

    runs = tmp_path / "runs"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = runs / f"{STAGING_PREFIX}{dead.stdout.strip()}-scene-20260101-abcd1234"
    live = runs / f"{STAGING_PREFIX}{os.getppid()}-scene-20260102-abcd1234"
    for folder in (orphan, live):
        folder.mkdir(parents=True)
        (folder / "events.out").write_text("x")
    staging = OutputSet(tmp_path, (), tmp_path / "staging").new_folder(runs / "scene-20260103")
    assert not orphan.exists() and live.exists() and staging.is_dir()


@pytest.mark.parametrize("damage, fragments", [("short", ("labels", "superpixels, but the Step 0 run made")),
                                               ("code", ("class codes [7]", "4 classes"))])
def test_predicted_labels_that_do_not_fit_the_superpixels_are_one_line(step2_workdir, tmp_path, capsys, damage,
                                                                         fragments):
    workdir, _, arguments = step2_workdir
    copy = tmp_path / "work"
    shutil.copytree(workdir, copy)
    contents = contract.load(contract.PRED_LABELS, copy, ["predLabels", contract.PROVENANCE])
    labels = contents["predLabels"].ravel()
    contents["predLabels"] = labels[:-5] if damage == "short" else np.where(np.arange(len(labels)) == 3, 7, labels)
    contract.save(contract.PRED_LABELS, copy, contents)
    fails_with_one_line(step3.main, [arguments[0], arguments[1], "--workdir", str(copy)], capsys, "predLabels.mat",
                        *fragments)


@pytest.mark.parametrize("name, flags", [("reference.tif", ()), ("layers.tif", ()), ("predMap.tif", ()),
                                         ("uncertainty.tif", ("--suggest", "5"))])
def test_a_raster_hand_off_edited_after_its_run_is_refused_by_later_steps(step2_workdir, tmp_path, capsys, name,
                                                                           flags):
    from osgeo import gdal

    workdir, _, arguments = step2_workdir
    copy = tmp_path / "work"
    shutil.copytree(workdir, copy)  # a copied folder is accepted: its rasters' SHA-256 are those recorded
    dataset = gdal.Open(str(copy / name), gdal.GA_Update)  # an edit in a GIS: the run stamp stays
    band = dataset.GetRasterBand(1)
    band.WriteArray(np.zeros((3, 3), dtype=band.ReadAsArray(0, 0, 1, 1).dtype), 0, 0)
    dataset = None
    assert gdal.Open(str(copy / name)).GetMetadataItem(contract.STEP0_RUN_ITEM if name in {
        "reference.tif", "layers.tif"} else contract.STEP2_RUN_ITEM)
    before = snapshot(copy)
    fails_with_one_line(step3.main, [arguments[0], arguments[1], "--workdir", str(copy), *flags], capsys, name,
                        "changed since", "rerun Step")
    assert snapshot(copy) == before


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_a_work_folder_removed_during_step0_is_one_line_and_nothing_is_committed(scene, capsys, monkeypatch, how):
    from pipeline.segmentation import quicklooks

    workdir = scene["folder"] / "w"
    original = quicklooks.write_quicklooks

    def remove_then_write(out, *rest):
        shutil.rmtree(workdir)
        if how == "replaced":
            workdir.mkdir()
            (workdir / "notes.txt").write_text("mine")
        out.path("sources").mkdir(parents=True, exist_ok=True)  # a careless write would remake the staging folder
        return original(out, *rest)

    monkeypatch.setattr(quicklooks, "write_quicklooks", remove_then_write)
    before = snapshot(scene["folder"])
    fails_with_one_line(step0.main, ["--config", str(scene["config"]), "--workdir", str(workdir)], capsys,
                        str(workdir), "removed or replaced while the step ran", "nothing was committed")
    assert snapshot(scene["folder"]) == before
    assert (sorted(p.name for p in workdir.iterdir()) == ["notes.txt"] if how == "replaced" else not workdir.exists())


@pytest.fixture
def greeting_server():
    """A TCP server on 127.0.0.1 that sends each connection ``greeting`` (set on the returned dict) and closes;
    yields {"port": ..., "greeting": bytes}."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    state, stop = {"port": server.getsockname()[1], "greeting": b""}, threading.Event()

    def serve():
        while not stop.is_set():
            try:
                connection = server.accept()[0]
            except OSError:
                continue
            with connection:
                connection.sendall(state["greeting"])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield state
    stop.set()
    thread.join()
    server.close()


@pytest.mark.parametrize("greeting", [b"SSH-2.0-OpenSSH_9.2\r\n", b"\xff" * 8, b"HTTP/1.1 400 Bad Request\r\n\r\n",
                                      (40).to_bytes(8, "little") + b"\x01" + b"\x00" * 39, b""],
                         ids=["ssh", "a huge frame", "http", "frames that do not add up", "closes at once"])
def test_a_server_that_greets_in_another_protocol_is_refused_before_dask_reads_it(scene, capsys, greeting_server,
                                                                                    greeting):
    import time

    greeting_server["greeting"] = greeting
    address = f"tcp://127.0.0.1:{greeting_server['port']}"
    before = snapshot(scene["folder"])
    start = time.monotonic()
    fails_with_one_line(step0.main, ["--config", str(scene["config"]), "--workdir", str(scene["folder"] / "w"),
                                     "--tile-size", "32", "--scheduler", address], capsys, address,
                        "does not greet as a Dask scheduler")
    assert time.monotonic() - start < 15 and snapshot(scene["folder"]) == before
    assert not (scene["folder"] / "w").exists()


@pytest.mark.parametrize("address, fragment", [("ucx://127.0.0.1:8786", "only tcp://"), ("tls://10.0.0.5:8786",
                                                                                           "only tcp://"),
                                               ("tcp://127.0.0.1:99999", "not an address"),
                                               ("127.0.0.1", "not an address")])
def test_scheduler_addresses_of_other_protocols_or_forms_are_one_line(scene, capsys, address, fragment):
    fails_with_one_line(step0.main, ["--config", str(scene["config"]), "--workdir", str(scene["folder"] / "w"),
                                     "--tile-size", "32", "--scheduler", address], capsys, address, fragment)


def test_a_tiled_run_leaves_no_dask_scratch_outside_the_work_folder(scene, tmp_path):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    workdir = scene["folder"] / "w"
    result = subprocess.run([sys.executable, "Step0_Data_Preparation.py", "--config", str(scene["config"]),
                             "--workdir", str(workdir), "--tile-size", "32", "--workers", "1"], cwd=PROJECT,
                            capture_output=True, text=True, timeout=300, env={**os.environ, "TMPDIR": str(temporary)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert list(temporary.iterdir()) == [] and not list(workdir.glob("*scratch*")) and not list(workdir.glob(".*"))


LOCAL_CRS = {"local": 'LOCAL_CS["site grid",UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]',
             "engineering": 'ENGCRS["site",EDATUM["site datum"],CS[Cartesian,2],AXIS["x",east,LENGTHUNIT["metre",1]],'
                            'AXIS["y",north,LENGTHUNIT["metre",1]]]'}


def with_crs(path, wkt: str):
    """Set the CRS of the raster ``path``; returns the path."""
    from osgeo import gdal

    dataset = gdal.Open(str(path), gdal.GA_Update)
    dataset.SetProjection(wkt)
    dataset = None
    return path


def local_polygons(path, wkt: str):
    """A GeoPackage of the quadrant scene's four class squares (field ``value``), in the CRS ``wkt``."""
    from osgeo import ogr, osr

    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = source.CreateLayer("labels", osr.SpatialReference(wkt), ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("value", ogr.OFTInteger))
    for value, (x, y) in zip((3, 2, 1, 4), ((500000, 5999680), (500320, 5999680), (500000, 5999360),
                                            (500320, 5999360))):
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("value", value)
        feature.SetGeometry(ogr.CreateGeometryFromWkt(f"POLYGON (({x} {y}, {x + 320} {y}, {x + 320} {y + 320}, "
                                                      f"{x} {y + 320}, {x} {y}))"))
        layer.CreateFeature(feature)
    source = None
    return path


@pytest.mark.parametrize("crs", sorted(LOCAL_CRS))
@pytest.mark.parametrize("role", ["reference", "vector reference", "mask", "later date", "image"])
def test_an_input_in_a_local_or_engineering_crs_is_one_line(scene, capsys, crs, role):
    folder, wkt = scene["folder"], LOCAL_CRS[crs]
    image, reference = "image.tif", "reference.tif"
    keys, name = {}, None
    if role == "reference":
        reference = name = with_crs(shutil.copy(folder / "reference.tif", folder / "local_ref.tif"), wkt).name
    elif role == "vector reference":
        reference = name = local_polygons(folder / "local.gpkg", wkt).name
        keys = {"reference_field": "value"}
    elif role == "mask":
        name = with_crs(shutil.copy(folder / "reference.tif", folder / "local_mask.tif"), wkt).name
        keys = {"mask": name, "mask_values": [4]}
    elif role == "later date":
        name = with_crs(shutil.copy(folder / "image.tif", folder / "local_date.tif"), wkt).name
        image = ["image.tif", name]
    else:  # the image: the reference (in UTM) is then the file that cannot be carried onto its grid
        image, name = with_crs(shutil.copy(folder / "image.tif", folder / "local_image.tif"), wkt).name, "reference.tif"
    config = write_scene(folder / "local.toml", image, reference, QUADRANT_PARAMETERS, **keys)
    before = snapshot(folder)
    fails_with_one_line(step0.main, ["--config", str(config), "--workdir", str(folder / "w")], capsys, name,
                        "cannot be transformed", "local or engineering CRS")
    assert snapshot(folder) == before and not (folder / "w").exists()


def run_with_file_size_limit(arguments, limit: int, timeout: float = 120):
    """A step in a child process that may write files of at most ``limit`` bytes, as on a disk that fills
    (writes beyond it fail with EFBIG; the signal that would kill the process is ignored): (exit code, stderr)."""
    import resource
    import signal

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run([sys.executable, *map(str, arguments)], cwd=PROJECT, capture_output=True, text=True,
                            timeout=timeout, preexec_fn=limited)
    return result.returncode, result.stderr


def hidden_files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))


@pytest.mark.parametrize("limit, name", [(5_000, "rgb.png"), (60_000, "samples_labels.mat")])  # Python's, HDF5's
def test_a_disk_that_fills_during_step0_is_one_line_naming_the_file_and_the_earlier_set_stays(scene, limit, name):
    workdir = scene["folder"] / "w"
    assert step0.main(["--config", str(scene["config"]), "--workdir", str(workdir)]) == 0
    before = snapshot(workdir)
    code, error = run_with_file_size_limit(["Step0_Data_Preparation.py", "--config", scene["config"], "--workdir",
                                            workdir, "--n-segments", "20"], limit)
    assert code == 1
    assert_one_line(error, [f"{workdir / name}:", "earlier outputs are left as they were"])
    assert snapshot(workdir) == before and hidden_files(workdir) == []


def test_a_disk_that_fills_during_a_cog_write_from_memory_names_the_file_and_leaves_nothing(tmp_path):
    """GDAL's own write failing: a raster staged in memory whose COG passes the file size limit."""
    target = tmp_path / "layers.tif"
    code = ("import sys, numpy as np, gdal_tif2rgb\n"
            "noise = np.random.default_rng(0).integers(0, 255, (3, 600, 700), dtype=np.uint8)\n"
            "try:\n"
            "    gdal_tif2rgb.write_geotiff(sys.argv[1], noise, gdal_tif2rgb.Grid(600, 700, (0, 10, 0, 0, 0, -10), ''))\n"
            "except OSError as error:\n"
            "    sys.exit(f'error: {error}')\n")
    assert 600 * 700 * 3 <= STAGING_IN_MEMORY_BYTES
    exit_code, error = run_with_file_size_limit(["-c", code, target], 200_000)
    assert exit_code == 1
    assert_one_line(error, [str(target), "GDAL could not write it"])
    assert list(tmp_path.iterdir()) == []


def test_a_cog_that_gdal_cuts_short_without_an_error_is_refused_and_leaves_nothing(tmp_path):
    """GDAL's COG driver meets a failed write (here a file size limit) and returns as if it had written the file:
    the file ends before its last block, which is a write error naming the file, and nothing is left."""
    target = tmp_path / "layers.tif"
    code = ("import sys, numpy as np, gdal_tif2rgb\n"
            "noise = np.random.default_rng(0).integers(0, 255, (8, 64, 64), dtype=np.uint8)\n"
            "try:\n"
            "    gdal_tif2rgb.write_geotiff(sys.argv[1], noise, gdal_tif2rgb.Grid(64, 64, (0, 10, 0, 0, 0, -10), ''),\n"
            "                               scale=1 / 255)\n"
            "except OSError as error:\n"
            "    sys.exit(f'error: {error}')\n")
    exit_code, error = run_with_file_size_limit(["-c", code, target], 20_000)  # the file would take about 35 kB
    assert exit_code == 1
    last = error.splitlines()[-1]  # GDAL prints its own line about the failed write before it
    assert last.startswith("error: ") and str(target) in last and "cut short at byte 20000" in last
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("step, limit, name", [(2, 20_000, "model.keras"), (2, 2_000, "runs"),
                                               (3, 200_000, "report.html")])
def test_a_disk_that_fills_during_steps_2_and_3_is_one_line_and_the_earlier_set_stays(step2_workdir, tmp_path, step,
                                                                                        limit, name):
    workdir, runs, arguments = step2_workdir
    copy, new_runs = tmp_path / "work", tmp_path / "runs"
    shutil.copytree(workdir, copy)
    before = snapshot(copy)
    script = {2: "Step2_Model_Training.py", 3: "Step3_Accuracy_Assessment.py"}[step]
    extra = ["--epochs", "1", "--runs-dir", new_runs] if step == 2 else []
    code, error = run_with_file_size_limit([script, arguments[0], arguments[1], "--workdir", copy, *extra], limit)
    assert code == 1
    assert_one_line(error, [str(new_runs) if name == "runs" else f"{copy / name}:", "earlier outputs are left"])
    assert snapshot(copy) == before and hidden_files(copy) == []
    assert not new_runs.exists() or list(new_runs.iterdir()) == []
