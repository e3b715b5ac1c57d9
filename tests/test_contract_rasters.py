"""Raster hand-offs go through the contract: dtype, bands, nodata and the run stamp are written and checked."""
from __future__ import annotations

import numpy as np
import pytest

import gdal_tif2rgb
from pipeline import contract
from pipeline.errors import InputDataError

GRID = gdal_tif2rgb.Grid(6, 5, (500000.0, 10.0, 0.0, 6000000.0, 0.0, -10.0), "")


def test_layers_round_trip_channels_last_whole_and_by_window(tmp_path):
    layers = np.arange(6 * 5 * 8, dtype=np.float32).reshape(6, 5, 8)
    contract.write_raster(contract.LAYERS, tmp_path, layers, GRID, "run-a")
    assert np.array_equal(contract.read_raster(contract.LAYERS, tmp_path, "run-a"), layers)
    assert np.array_equal(contract.read_raster(contract.LAYERS, tmp_path, "run-a", window=(2, 1, 3, 4)),
                          layers[2:5, 1:5])
    assert contract.raster_grid(contract.LAYERS, tmp_path, "run-a").rows == 6


def test_written_block_by_block_equals_written_whole(tmp_path):
    codes = np.arange(30, dtype=np.uint8).reshape(6, 5)
    with contract.raster_writer(contract.REFERENCE, tmp_path, GRID, "run-a", class_names=["a"],
                                class_colours=[(1, 2, 3)]) as write:
        write(codes[:4], 0, 0)
        write(codes[4:], 4, 0)
    assert np.array_equal(contract.read_raster(contract.REFERENCE, tmp_path, "run-a"), codes)


def test_a_raster_of_another_run_is_refused_naming_the_step(tmp_path):
    contract.write_raster(contract.SEGMENTS_RASTER, tmp_path, np.zeros((6, 5), np.int32), GRID, "run-a")
    with pytest.raises(InputDataError, match=r"segments.tif: written by another run .*rerun Step0"):
        contract.read_raster(contract.SEGMENTS_RASTER, tmp_path, "run-b")


def test_a_raster_of_another_dtype_is_refused(tmp_path):
    gdal_tif2rgb.write_geotiff(tmp_path / "predMap.tif", np.zeros((6, 5), np.int16), GRID,
                               metadata={contract.STEP2_RUN_ITEM: "run-a"})
    with pytest.raises(InputDataError, match=r"predMap.tif: 1 band\(s\) of int16, not 1 of uint8"):
        contract.raster_grid(contract.PRED_MAP_RASTER, tmp_path, "run-a")


def test_a_missing_raster_names_the_step_to_run(tmp_path):
    with pytest.raises(gdal_tif2rgb.InputFileError, match=r"uncertainty.tif: not found; run Step2"):
        contract.read_raster(contract.UNCERTAINTY, tmp_path, "run-a")
