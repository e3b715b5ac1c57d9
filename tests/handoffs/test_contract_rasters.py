"""Raster hand-offs go through the contract: dtype, bands, nodata, the run stamp and the checksum recorded in the
run's provenance are written and checked."""
from __future__ import annotations

import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

import gdal_tif2rgb
from pipeline.handoffs import contract
from pipeline.core.errors import InputDataError, InputFileError

GRID = gdal_tif2rgb.Grid(6, 5, (500000.0, 10.0, 0.0, 6000000.0, 0.0, -10.0), "")


def recorded(folder, run: str, *handoffs) -> dict:
    """The provenance record a step saves after writing ``handoffs`` into ``folder`` (staged where committed)."""
    record = {"run": run}
    contract.record_rasters(record, SimpleNamespace(staging=folder, folder=folder), handoffs)
    return record


def test_layers_round_trip_channels_last_whole_and_by_window_to_the_stored_step(tmp_path):
    layers = np.arange(6 * 5 * 8, dtype=np.float32).reshape(6, 5, 8) / np.float32(239)  # in [0, 1]
    contract.write_raster(contract.LAYERS, tmp_path, layers, GRID, "run-a")
    record = recorded(tmp_path, "run-a", contract.LAYERS)
    back = contract.read_raster(contract.LAYERS, tmp_path, record)
    assert back.dtype == np.float32 and np.abs(back - layers).max() <= 0.5 / 255 + 1e-7
    assert np.array_equal(back, contract.decode_unit_values(contract.encode_unit_values(layers)))
    assert np.array_equal(contract.read_raster(contract.LAYERS, tmp_path, record, window=(2, 1, 3, 4)),
                          back[2:5, 1:5])
    assert contract.raster_grid(contract.LAYERS, tmp_path, record).rows == 6


def test_layers_carry_their_band_scale_as_gdal_and_qgis_read_it(tmp_path):
    from osgeo import gdal

    layers = np.full((6, 5, 8), 0.5, np.float32)
    contract.write_raster(contract.LAYERS, tmp_path, layers, GRID, "run-a")
    dataset = gdal.Open(str(tmp_path / "layers.tif"))
    for i in range(8):
        band = dataset.GetRasterBand(i + 1)
        assert band.DataType == gdal.GDT_Byte and band.GetScale() == pytest.approx(1 / 255) and band.GetOffset() == 0
        value = float(band.ReadAsArray()[0, 0]) * band.GetScale() + band.GetOffset()
        assert value == pytest.approx(0.5, abs=0.5 / 255)


def test_written_block_by_block_equals_written_whole(tmp_path):
    codes = np.arange(30, dtype=np.uint8).reshape(6, 5)
    with contract.raster_writer(contract.REFERENCE, tmp_path, GRID, "run-a", class_names=["a"],
                                class_colours=[(1, 2, 3)]) as write:
        write(codes[:4], 0, 0)
        write(codes[4:], 4, 0)
    assert np.array_equal(contract.read_raster(contract.REFERENCE, tmp_path,
                                               recorded(tmp_path, "run-a", contract.REFERENCE)), codes)


def test_a_raster_of_another_run_is_refused_naming_the_step(tmp_path):
    contract.write_raster(contract.SEGMENTS_RASTER, tmp_path, np.zeros((6, 5), np.int32), GRID, "run-a")
    with pytest.raises(InputDataError, match=r"segments.tif: written by another run .*rerun Step0"):
        contract.read_raster(contract.SEGMENTS_RASTER, tmp_path, {"run": "run-b"})


def test_a_raster_of_another_dtype_is_refused(tmp_path):
    gdal_tif2rgb.write_geotiff(tmp_path / "predMap.tif", np.zeros((6, 5), np.int16), GRID,
                               metadata={contract.STEP2_RUN_ITEM: "run-a"})
    with pytest.raises(InputDataError, match=r"predMap.tif: 1 band\(s\) of int16, not 1 of uint8"):
        contract.raster_grid(contract.PRED_MAP_RASTER, tmp_path, recorded(tmp_path, "run-a", contract.PRED_MAP_RASTER))


def test_a_missing_raster_names_the_step_to_run(tmp_path):
    with pytest.raises(InputFileError, match=r"uncertainty.tif: not found; run Step2"):
        contract.read_raster(contract.UNCERTAINTY, tmp_path, {"run": "run-a", "rasters": {}})


def test_a_raster_edited_after_its_run_is_refused_though_its_stamp_is_kept(tmp_path):
    codes = np.zeros((6, 5), np.uint8)
    contract.write_raster(contract.REFERENCE, tmp_path, codes, GRID, "run-a")
    record = recorded(tmp_path, "run-a", contract.REFERENCE)
    contract.read_raster(contract.REFERENCE, tmp_path, record)  # checked once: later reads take the fast path
    from osgeo import gdal

    dataset = gdal.Open(str(tmp_path / "reference.tif"), gdal.GA_Update)  # as an edit in QGIS would do
    dataset.GetRasterBand(1).WriteArray(codes + 1)
    dataset = None
    with pytest.raises(InputDataError, match=r"reference.tif: changed since Step0\S* wrote it .*rerun Step0\S*$"):
        contract.read_raster(contract.REFERENCE, tmp_path, record)


def test_a_copied_folder_is_accepted_by_its_checksum_and_an_edit_of_the_copy_is_refused(tmp_path):
    contract.write_raster(contract.SEGMENTS_RASTER, tmp_path / "a", np.zeros((6, 5), np.int32), GRID, "run-a")
    record = recorded(tmp_path / "a", "run-a", contract.SEGMENTS_RASTER)
    shutil.copytree(tmp_path / "a", tmp_path / "copy")  # a copy (new times) of the same bytes is accepted
    assert contract.read_raster(contract.SEGMENTS_RASTER, tmp_path / "copy", record).shape == (6, 5)
    path = tmp_path / "copy" / "segments.tif"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the last byte of the last tile: the file still opens
    path.write_bytes(bytes(data))
    with pytest.raises(InputDataError, match=r"changed since Step0\S* wrote it"):
        contract.read_raster(contract.SEGMENTS_RASTER, tmp_path / "copy", record)
    os.utime(path, ns=(0, 0))
    with pytest.raises(InputDataError, match=r"changed since Step0\S* wrote it"):
        contract.read_raster(contract.SEGMENTS_RASTER, tmp_path / "copy", record)


@pytest.mark.parametrize("rasters", [None, "text", {"segments.tif": 3}, {"segments.tif": {"path": 1}}, {}])
def test_a_provenance_without_a_usable_checksum_is_one_line(tmp_path, rasters):
    contract.write_raster(contract.SEGMENTS_RASTER, tmp_path, np.zeros((6, 5), np.int32), GRID, "run-a")
    record = {"run": "run-a", **({} if rasters is None else {"rasters": rasters})}
    with pytest.raises(InputDataError, match=r"segments.tif: (the provenance of run run-a records no checksum|"
                                             r"changed since)"):
        contract.read_raster(contract.SEGMENTS_RASTER, tmp_path, record)
