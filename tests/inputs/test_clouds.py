"""Clouds and several dates, on L2A and L1C products written from the real demo crop with clouds and shadows
painted where the test decides (and the product's own SCL or MSK_CLASSI saying so), so the right mask is known."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from osgeo import gdal
from scipy import ndimage

import Step0_Data_Preparation as step0
import Step1_Class_Balance as step1
import Step2_Model_Training as step2
from builders import (CLASS_VALUES, CROP_PARAMETERS, CROP_SIZE, NODATA_BLOCK, STACK_BANDS, fails_with_one_line,
                      mem_raster, write_product, write_scene, zip_folder)
from pipeline.inputs.clouds import detect_clouds, grow

BANDS = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08", "swir": "B11"}
PARAMETERS = {**CROP_PARAMETERS, "mask_buffer_m": 0.0, "per_class": 30, "epochs": 1}
CLOUD_DN = 1000 + 5000  # reflectance 0.5 in every band (offset -1000): bright and white


def blocks(*boxes) -> np.ndarray:
    """A 10 m mask (CROP_SIZE x CROP_SIZE) of boxes (row0, row1, col0, col1) on even pixels, i.e. whole 20 m pixels."""
    mask = np.zeros((CROP_SIZE, CROP_SIZE), bool)
    for r0, r1, c0, c1 in boxes:
        mask[2 * r0:2 * r1, 2 * c0:2 * c1] = True
    return mask


def paint_product(product, level: str, clouds: np.ndarray, shadows: np.ndarray, day: int, own_mask: bool = True):
    """Paint clouds (bright, white) and shadows (a third of the light) into every band file of ``product``, and
    write its own mask: an L2A SCL_20m.jp2 (9 cloud, 3 shadow, 4 elsewhere, 0 in the nodata block) or an L1C
    MSK_CLASSI_B00.jp2 (band 1 opaque clouds); set its sensing day of May 2021."""
    for path in product.rglob("*_B*.jp2"):
        dataset = gdal.Open(str(path))
        dn, gt, wkt = dataset.ReadAsArray().astype(np.int64), dataset.GetGeoTransform(), dataset.GetProjection()
        dataset = None
        factor = CROP_SIZE // dn.shape[0]
        cloud, shadow = clouds[::factor, ::factor], shadows[::factor, ::factor]
        valid = dn > 0
        dn[cloud & valid] = CLOUD_DN
        dn[shadow & valid] = 1000 + (dn[shadow & valid] - 1000) // 3
        gdal.GetDriverByName("JP2OpenJPEG").CreateCopy(str(path), mem_raster(dn.astype(np.uint16), gt, wkt),
                                                       options=["QUALITY=100", "REVERSIBLE=YES"])
    b11 = next(product.rglob("*_B11*.jp2"))
    dataset = gdal.Open(str(b11))
    gt20, wkt, nodata = dataset.GetGeoTransform(), dataset.GetProjection(), dataset.ReadAsArray() == 0
    dataset = None
    granule = next(product.glob("GRANULE/*"), product)
    if own_mask and level == "L2A":
        scl = np.full((CROP_SIZE // 2, CROP_SIZE // 2), 4, np.uint8)
        scl[clouds[::2, ::2]], scl[shadows[::2, ::2]], scl[nodata] = 9, 3, 0
        target = granule / "IMG_DATA" / "R20m" / f"T30UVD_2021052{day}T113321_SCL_20m.jp2"
        gdal.GetDriverByName("JP2OpenJPEG").CreateCopy(str(target), mem_raster(scl, gt20, wkt),
                                                       options=["QUALITY=100", "REVERSIBLE=YES"])
    elif own_mask:
        (granule / "QI_DATA").mkdir(exist_ok=True)
        bands = gdal.GetDriverByName("MEM").Create("", CROP_SIZE // 2, CROP_SIZE // 2, 3, gdal.GDT_Byte)
        bands.SetGeoTransform(gt20)
        bands.SetProjection(wkt)
        bands.GetRasterBand(1).WriteArray(clouds[::2, ::2].astype(np.uint8))
        gdal.GetDriverByName("JP2OpenJPEG").CreateCopy(str(granule / "QI_DATA" / "MSK_CLASSI_B00.jp2"), bands,
                                                       options=["QUALITY=100", "REVERSIBLE=YES"])
    metadata = next(product.glob("MTD_MSI*.xml"), None)
    if metadata is not None:
        text = metadata.read_text().replace("<Product_Info>", f"<Product_Info><PRODUCT_START_TIME>2021-05-2{day}T11:33:"
                                                              f"21.024Z</PRODUCT_START_TIME>")
        metadata.write_text(text)
    return product


def dated_product(folder, crop_scene, level, clouds, shadows, day, own_mask=True):
    folder.mkdir(parents=True, exist_ok=True)
    product = write_product(folder / f"S2A_MSI{level or 'X'}_2021052{day}_T30UVD.SAFE", crop_scene, level)
    return paint_product(product, level, clouds, shadows, day, own_mask)


def run_step0(folder, images, reference, parameters=PARAMETERS, **keys) -> dict:
    """Step 0 on ``images`` (one or several dates) with ``reference``; the work folder, its rasters and run.json."""
    folder.mkdir(parents=True, exist_ok=True)
    config = write_scene(folder / "scene.toml", [str(p) for p in images] if isinstance(images, list) else images,
                         reference, parameters, name="clouds", bands=BANDS, classes=CLASS_VALUES, **keys)
    work = folder / "work"
    assert step0.main(["--config", str(config), "--workdir", str(work)]) == 0
    read = {name: gdal.Open(str(work / f"{name}.tif")).ReadAsArray() for name in ("layers", "reference")}
    clear = work / "clear_observations.tif"
    return {"work": work, "config": config, **read,
            "clear": gdal.Open(str(clear)).ReadAsArray() if clear.is_file() else None,
            "run": json.loads((work / "run.json").read_text())["steps"]["Step0_Data_Preparation"]}


NODATA = np.zeros((CROP_SIZE, CROP_SIZE), bool)
NODATA[NODATA_BLOCK] = True
CLOUDS = blocks((30, 45, 10, 40), (70, 90, 60, 80))
SHADOWS = blocks((46, 52, 10, 40))


def test_cloud_and_shadow_pixels_are_nodata_in_every_output(tmp_path, crop_scene, crop_files):
    product = dated_product(tmp_path, crop_scene, "L2A", CLOUDS, SHADOWS, 7)
    result = run_step0(tmp_path, product, crop_files[1])
    masked = CLOUDS | SHADOWS | NODATA
    assert (result["reference"][masked] == 255).all() and (result["reference"][~masked] != 255).all()
    assert (result["layers"][:, masked] == 0).all()
    assert np.array_equal(result["clear"], (~masked).astype(np.uint8))
    date = result["run"]["sources"]["dates"][0]
    assert date["masks"] == ["scl"] and date["acquired"].startswith("2021-05-27T11:33:21")
    assert date["masked_share"]["cloud"] == pytest.approx((CLOUDS & ~NODATA).mean(), abs=1e-6)
    assert date["masked_share"]["cloud shadow"] == pytest.approx((SHADOWS & ~NODATA).mean(), abs=1e-6)
    # never trained on, never scored: Step 2's map is 255 on every masked pixel
    arguments = ["--config", str(result["config"]), "--workdir", str(result["work"])]
    assert step1.main(arguments) == 0
    assert step2.main([*arguments, "--runs-dir", str(tmp_path / "runs")]) == 0
    pred_map = gdal.Open(str(result["work"] / "predMap.tif")).ReadAsArray()
    assert (pred_map[masked] == 255).all() and (pred_map[~masked] != 255).all()


def test_three_cloudy_dates_reproduce_the_clear_scene(tmp_path, crop_scene, crop_files):
    """The 20 m bands are resampled bilinearly, so a 10 m pixel beside a cloud (diagonals included) takes some
    of its light: a 20 m buffer masks it too. Every pixel is clear on at least one date."""
    nothing = np.zeros_like(CLOUDS)
    parameters = {**PARAMETERS, "mask_buffer_m": 20.0}
    clear = run_step0(tmp_path / "clear", dated_product(tmp_path / "clear", crop_scene, "L2A", nothing, nothing, 1),
                      crop_files[1], parameters)
    masks = [(blocks((0, 50, 0, 100)), blocks((50, 55, 0, 100))), (blocks((40, 100, 0, 50)), nothing),
             (blocks((20, 100, 60, 100)), blocks((10, 20, 60, 100)))]
    dates = [dated_product(tmp_path / f"date{day}", crop_scene, "L2A", c, s, day)
             for day, (c, s) in enumerate(masks, start=2)]
    composite = run_step0(tmp_path / "three", dates, crop_files[1], parameters)
    assert np.array_equal(composite["layers"], clear["layers"])
    assert np.array_equal(composite["reference"], clear["reference"])
    y, x = np.ogrid[-2:3, -2:3]
    disk = x * x + y * y <= 4  # 2 px of 10 m
    expected = 3 - sum(ndimage.binary_dilation(c | s, structure=disk).astype(np.uint8) for c, s in masks)
    assert np.array_equal(composite["clear"], np.where(NODATA, 0, expected))
    assert [d["acquired"][:10] for d in composite["run"]["sources"]["dates"]] == ["2021-05-22", "2021-05-23",
                                                                                  "2021-05-24"]
    assert (composite["work"] / "clear_observations.png").is_file()


def test_a_zipped_l2a_product_is_masked_by_the_scl_inside_the_zip(tmp_path, crop_scene, crop_files):
    product = zip_folder(dated_product(tmp_path, crop_scene, "L2A", CLOUDS, SHADOWS, 7))
    result = run_step0(tmp_path, product, crop_files[1])
    assert result["run"]["sources"]["dates"][0]["masks"] == ["scl"]
    assert np.array_equal(result["reference"] == 255, CLOUDS | SHADOWS | NODATA)


def test_the_buffer_grows_clouds_and_shadows(tmp_path, crop_scene, crop_files):
    product = dated_product(tmp_path, crop_scene, "L2A", CLOUDS, SHADOWS, 7)
    result = run_step0(tmp_path, product, crop_files[1], {**PARAMETERS, "mask_buffer_m": 40.0})
    y, x = np.ogrid[-4:5, -4:5]
    grown = ndimage.binary_dilation(CLOUDS | SHADOWS, structure=x * x + y * y <= 16)  # 4 px of 10 m
    assert np.array_equal(result["reference"] == 255, grown | NODATA)


def test_a_band_folder_without_masks_gets_the_detectors_mask(tmp_path, crop_scene, crop_files):
    product = dated_product(tmp_path, crop_scene, None, CLOUDS, np.zeros_like(CLOUDS), 7, own_mask=False)
    result = run_step0(tmp_path, product, crop_files[1])
    masked = result["reference"] == 255
    assert result["run"]["sources"]["dates"][0]["masks"] == ["detector"]
    assert masked[CLOUDS].mean() > 0.99
    assert masked[~CLOUDS & ~NODATA].mean() < 0.01  # bright roofs and sand stay


def test_an_l1c_product_is_masked_by_its_msk_classi(tmp_path, crop_scene, crop_files):
    product = dated_product(tmp_path, crop_scene, "L1C", CLOUDS, np.zeros_like(CLOUDS), 7)
    result = run_step0(tmp_path, product, crop_files[1])
    assert result["run"]["sources"]["dates"][0]["masks"] == ["msk_classi"]
    assert np.array_equal(result["reference"] == 255, CLOUDS | NODATA)


def test_a_mask_raster_on_another_grid_and_crs(tmp_path, crop_scene, crop_files):
    """A mask in WGS 84 degrees over an ordinary raster stack in British National Grid metres."""
    lonlat = gdal.Warp(str(tmp_path / "clouds_4326.tif"), mem_raster(CLOUDS.astype(np.uint8) * 7,
                                                                    crop_scene["geotransform"], crop_scene["wkt"]),
                       dstSRS="EPSG:4326", resampleAlg="near", xRes=5e-5, yRes=5e-5)
    lonlat = None
    bands = {role: STACK_BANDS[name] for role, name in BANDS.items()}
    config = write_scene(tmp_path / "scene.toml", crop_files[0], crop_files[1], PARAMETERS, bands=bands,
                         classes=CLASS_VALUES, mask=str(tmp_path / "clouds_4326.tif"), mask_values=[7])
    assert step0.main(["--config", str(config), "--workdir", str(tmp_path / "work")]) == 0
    masked = gdal.Open(str(tmp_path / "work" / "reference.tif")).ReadAsArray() == 255
    assert (masked == CLOUDS).mean() > 0.995  # nearest-neighbour through a reprojection: the edges may move a pixel
    run = json.loads((tmp_path / "work" / "run.json").read_text())["steps"]["Step0_Data_Preparation"]
    assert run["sources"]["dates"][0]["masks"] == ["raster"]


def test_masking_false_keeps_every_pixel(tmp_path, crop_scene, crop_files):
    product = dated_product(tmp_path, crop_scene, "L2A", CLOUDS, SHADOWS, 7)
    result = run_step0(tmp_path, product, crop_files[1], {**PARAMETERS, "masking": False})
    assert np.array_equal(result["reference"] == 255, NODATA) and result["clear"] is None


def test_the_detector_on_painted_and_real_pixels():
    white = {"blue": np.array([0.5]), "green": np.array([0.5]), "red": np.array([0.5]), "swir": np.array([0.5])}
    snow = {**white, "swir": np.array([0.02])}
    assert detect_clouds(white).tolist() == [True] and detect_clouds(snow).tolist() == [False]


@pytest.mark.parametrize("problem, fragments", [
    ("another area", ("does not overlap the work grid", "another area")),
    ("product and raster", ("cannot be stacked",)),
    ("mask values", ("mask needs mask_values",)),
    ("mask value nan", ("mask needs mask_values", "finite", "nan")),
    ("mask value absent", ("mask_values 7 never occur", "values present: 1 (", "labels.tif")),
    ("composite", ("composite = 'mean'",)),
])
def test_dates_and_masks_that_cannot_be_used_are_one_line_errors(tmp_path, crop_scene, crop_files, capsys, problem,
                                                                 fragments):
    nothing = np.zeros_like(CLOUDS)
    product = dated_product(tmp_path, crop_scene, "L2A", nothing, nothing, 1)
    keys, images = {}, [str(product)]
    if problem == "another area":
        far = tmp_path / "far.tif"
        gdal.Translate(str(far), str(crop_files[0]))
        dataset = gdal.Open(str(far), gdal.GA_Update)
        gt = list(dataset.GetGeoTransform())
        gt[0] += 200_000
        dataset.SetGeoTransform(gt)
        dataset = None
        images = [str(crop_files[0]), str(far)]
    elif problem == "product and raster":
        images.append(str(crop_files[0]))
    elif problem.startswith("mask value"):
        keys["mask"] = str(crop_files[1])  # values 1 to 4
        keys.update({"mask_values": [7]} if problem != "mask values" else {})
    else:
        keys["composite"] = "mean"
    bands = ({role: STACK_BANDS[name] for role, name in BANDS.items()} if problem == "another area" else BANDS)
    config = write_scene(tmp_path / "bad.toml", images, crop_files[1], PARAMETERS, bands=bands, classes=CLASS_VALUES,
                         **keys)
    if problem == "mask value nan":
        config.write_text(config.read_text().replace("mask_values = [7]", "mask_values = [1, nan]"))
    fails_with_one_line(step0.main, ["--config", str(config), "--workdir", str(tmp_path / "work")], capsys,
                        *fragments)
    assert not re.search(r"Traceback", capsys.readouterr().err)


@pytest.mark.parametrize("density", [0.0005, 0.02, 0.3])
def test_grow_is_the_disk_dilation_at_any_radius(density):
    """Masks grow by a distance transform: the pixels a binary dilation with the disk x² + y² <= r² gives, for
    every radius up to 12 px, and a radius past the scene's size masks all of a scene with one masked pixel."""
    mask = np.random.default_rng(1).random((70, 90)) < density
    mask[35, 45] = True
    for radius in range(13):
        y, x = np.ogrid[-radius:radius + 1, -radius:radius + 1]
        assert np.array_equal(grow(mask, radius), ndimage.binary_dilation(mask, structure=x * x + y * y <= radius ** 2)
                              if radius else mask), radius
    assert grow(mask, 500).all() and not grow(np.zeros_like(mask), 500).any()


def test_a_tiled_run_composites_on_the_cluster_as_the_whole_scene(tmp_path, crop_scene, crop_files):
    masks = [(CLOUDS, SHADOWS), (blocks((0, 40, 50, 100)), np.zeros_like(CLOUDS))]
    dates = [dated_product(tmp_path / f"date{day}", crop_scene, "L2A", c, s, day) for day, (c, s) in
             enumerate(masks, start=2)]
    whole = run_step0(tmp_path / "whole", dates, crop_files[1])
    tiled = tmp_path / "tiled"
    assert step0.main(["--config", str(whole["config"]), "--workdir", str(tiled), "--tile-size", "128",
                       "--workers", "1"]) == 0
    for name in ("layers", "reference", "clear_observations"):
        assert np.array_equal(gdal.Open(str(tiled / f"{name}.tif")).ReadAsArray(),
                              gdal.Open(str(whole["work"] / f"{name}.tif")).ReadAsArray()), name


def test_a_date_on_another_grid_and_crs_is_warped_onto_the_work_grid(tmp_path, crop_scene, crop_files):
    """The second date is the first reprojected to UTM 30N: on the work grid (British National Grid) both are
    clear almost everywhere, and the composite stays close to the first date."""
    utm = tmp_path / "crop_utm.tif"
    gdal.Warp(str(utm), str(crop_files[0]), dstSRS="EPSG:32630", xRes=10, yRes=10, resampleAlg="bilinear")
    bands = {role: STACK_BANDS[name] for role, name in BANDS.items()}
    one = tmp_path / "one"
    one.mkdir()
    single = write_scene(one / "scene.toml", crop_files[0], crop_files[1], PARAMETERS, bands=bands,
                         classes=CLASS_VALUES)
    assert step0.main(["--config", str(single), "--workdir", str(one / "work")]) == 0
    config = write_scene(tmp_path / "scene.toml", [str(crop_files[0]), str(utm)], crop_files[1], PARAMETERS,
                         bands=bands, classes=CLASS_VALUES)
    assert step0.main(["--config", str(config), "--workdir", str(tmp_path / "work")]) == 0
    clear = gdal.Open(str(tmp_path / "work" / "clear_observations.tif")).ReadAsArray()
    assert clear.min() >= 1 and (clear == 2).mean() > 0.95  # the rotated footprint leaves the corners to date 1
    first = gdal.Open(str(one / "work" / "layers.tif")).ReadAsArray() / 255  # the band scale: values 0-1
    both = gdal.Open(str(tmp_path / "work" / "layers.tif")).ReadAsArray() / 255
    assert np.median(np.abs(both - first)) < 0.02  # stretched layers, 0-1: bilinear resampling moves little
