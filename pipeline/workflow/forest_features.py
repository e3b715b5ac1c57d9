"""The random forest's features of a scene (Steps 2 and 3): each superpixel's mean and standard deviation of every
band of the image Step 0 prepared and of NDVI, NDWI and NDBI, summed window by window with ``segments.tif``
(:func:`pipeline.model.forest.superpixel_features`), and what a trained forest's card records of them."""
from __future__ import annotations

import numpy as np

import gdal_tif2rgb
from pipeline.assessment.report_text import run_record
from pipeline.core import grids
from pipeline.core.errors import InputDataError
from pipeline.core.vocabulary import LAYER_NAMES, SPECTRAL_BANDS, STEP0
from pipeline.handoffs import contract
from pipeline.model import forest
from pipeline.run.config import Scene
from pipeline.segmentation.layers import build_layers

#: Side in pixels of the square windows in which the image and ``segments.tif`` are read: a window of a 13-band
#: float32 image takes 52 MiB whatever the scene's size.
WINDOW = 1024
#: The indices computed from the bands, after them, in the order of the features.
INDICES = ("ndvi", "ndwi", "ndbi")


def prepared_image(scene: Scene, step0_record: dict) -> dict:
    """The image Step 0 prepared (``sources`` of its entry in ``run.json``): ``path`` (the user's raster, or
    ``sources/image.vrt`` or ``image.tif``), ``roles`` (role -> band number), ``band_count`` and ``unit``, checked to
    be of the Step 0 run ``step0_record`` and on its grid."""
    step0 = run_record(scene).get("steps", {}).get("Step0_Data_Preparation", {})
    sources = step0.get("sources") or {}
    if step0.get("run") != step0_record["run"] or "prepared_bands" not in sources:
        raise InputDataError(f"{scene.output('run.json')}: does not name the image of the Step 0 run that made "
                             f"{contract.SEGMENTS.filename}; rerun {STEP0}")
    path = sources["prepared_image"]
    grid, count, _, _ = gdal_tif2rgb.read_layout(path)
    layers = contract.raster_grid(contract.SEGMENTS_RASTER, scene.workdir, step0_record)
    if (grid.rows, grid.cols) != (layers.rows, layers.cols):
        raise InputDataError(f"{path}: {grid.cols} x {grid.rows} px, but segments.tif {layers.cols} x {layers.rows}; "
                             f"rerun {STEP0}")
    return {"path": path, "roles": dict(sources["prepared_bands"]), "band_count": count,
            "unit": step0_record["stretch"].get("unit")}


def image_reader(image: dict):
    """``read(window)``: every band of the prepared ``image`` (:func:`prepared_image`), in the image's unit, then
    NDVI, NDWI and NDBI of its bands, float32 (rows, cols, bands + 3), for a window (row, col, rows, cols)."""
    path, roles, count = image["path"], image["roles"], image["band_count"]

    def read(window):
        data, _, valid = gdal_tif2rgb.read_bands(path, list(range(1, count + 1)), np.float32, window)
        indices = build_layers({role: data[number - 1] for role, number in roles.items()},
                               valid)[..., len(SPECTRAL_BANDS):len(LAYER_NAMES)]
        return np.concatenate([np.moveaxis(data, 0, -1), indices], axis=-1)

    return read


def scene_features(scene: Scene, step0_record: dict, n_superpixels: int, image: dict | None = None) -> np.ndarray:
    """The features (n_superpixels, 2 (bands + 3)) float32 of every superpixel of the Step 0 run ``step0_record``
    (:func:`pipeline.model.forest.superpixel_features`), window by window of :data:`WINDOW` px."""
    image = image or prepared_image(scene, step0_record)
    layers = contract.raster_grid(contract.SEGMENTS_RASTER, scene.workdir, step0_record)
    windows = grids.read_windows((layers.rows, layers.cols), WINDOW, image_reader(image),
                                 lambda window: contract.read_raster(contract.SEGMENTS_RASTER, scene.workdir,
                                                                     step0_record, window))
    return forest.superpixel_features(windows, n_superpixels)[0]


def card_features(image: dict) -> dict:
    """What a forest's card records of its features: the bands' ``roles`` (role -> band number), ``band_count``,
    ``unit``, the ``indices`` and the ``count`` of features (means, then standard deviations)."""
    return {"roles": image["roles"], "band_count": image["band_count"], "unit": image["unit"],
            "indices": list(INDICES), "count": 2 * (image["band_count"] + len(INDICES))}


def check_features_fit(recorded: dict, image: dict, model_path) -> None:
    """Refuse, in one line, a scene whose prepared ``image`` gives other features than the forest's card
    ``recorded`` (:func:`card_features`): other band roles, band count or unit."""
    scene = card_features(image)
    for key, advice in (("unit", "give a scene of the model's kind of image"),
                        ("band_count", "give an image with the same bands as its training scene's"),
                        ("roles", "name the same bands in [bands] as its training scene")):
        if scene[key] != recorded[key]:
            raise InputDataError(f"{model_path}: the forest was trained on image bands with {key} {recorded[key]}, "
                                 f"this scene's have {scene[key]}; {advice}")
