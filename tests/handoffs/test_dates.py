"""Every date of ``image = [a, b, ...]`` is an input the hand-offs vouch for: each date's file is fingerprinted by
Step 0 and checked by the later steps, and one file given as two dates (another name of it, a link, a copy) is
refused in one line naming both, before any output is made."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from osgeo import gdal

import Step0_Data_Preparation as step0
import Step1_Class_Balance as step1
from builders import ABERYSTWYTH_BANDS, CLASS_VALUES, CROP_PARAMETERS, fails_with_one_line, write_scene


def later_date(path, source):
    """A second date: ``source`` with its first band brighter by 1 (another observation of the same place)."""
    shutil.copy(source, path)
    dataset = gdal.Open(str(path), gdal.GA_Update)
    band = dataset.GetRasterBand(1)
    band.WriteArray(band.ReadAsArray() + 1)
    dataset = None
    return path


def scene(folder, dates, reference):
    return write_scene(folder / "dates.toml", [str(date) for date in dates], reference,
                       {**CROP_PARAMETERS, "per_class": 20}, bands=ABERYSTWYTH_BANDS, classes=CLASS_VALUES)


def test_an_edited_later_date_is_refused_by_the_later_steps(tmp_path, crop_files, capsys):
    image, reference = crop_files
    second = later_date(tmp_path / "second.tif", image)
    config = scene(tmp_path, [image, second], reference)
    arguments = ["--config", str(config), "--workdir", str(tmp_path / "work")]
    assert step0.main(arguments) == 0
    dataset = gdal.Open(str(second), gdal.GA_Update)  # edited in place: same size, other values
    band = dataset.GetRasterBand(2)
    band.WriteArray(np.zeros((10, 10), np.uint16) + 7)
    dataset = None
    before = sorted((path.name, path.stat().st_mtime_ns) for path in (tmp_path / "work").iterdir())
    fails_with_one_line(step1.main, arguments, capsys, "samples_labels.mat", str(second), "rerun Step0")
    assert sorted((path.name, path.stat().st_mtime_ns) for path in (tmp_path / "work").iterdir()) == before


@pytest.mark.parametrize("kind", ["hard link", "symbolic link", "copy"])
def test_one_file_as_two_dates_is_refused_naming_both(tmp_path, crop_files, capsys, kind):
    image, reference = crop_files
    again = tmp_path / "again.tif"
    {"hard link": os.link, "symbolic link": os.symlink, "copy": shutil.copy}[kind](image, again)
    config = scene(tmp_path, [image, again], reference)
    before = image.read_bytes()
    fails_with_one_line(step0.main, ["--config", str(config), "--workdir", str(tmp_path / "work")], capsys,
                        str(image), str(again), "list each date once")
    assert image.read_bytes() == before and not (tmp_path / "work").exists()
