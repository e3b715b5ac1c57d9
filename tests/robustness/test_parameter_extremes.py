"""Every accepted parameter is affordable: each numeric parameter of ``Parameters`` that Step 0 uses, at the
smallest and the largest value the configuration accepts (a huge one where no largest is set), runs Step 0 on the
200 x 200 px crop (an L2A product with a cloud in its SCL, so masks grow) in a process limited to 4 GiB of address
space and 60 s, and finishes or refuses in one line. The cases are made from the parameter table, so a new
parameter is tried as soon as it is declared (or must say here why not)."""
from __future__ import annotations

import resource

import numpy as np
import pytest

from builders import (CLASS_VALUES, CROP_PARAMETERS, CROP_SIZE, PROJECT, mem_raster, run_script, write_product,
                      write_scene)
from pipeline.handoffs.provenance import STEP0_PARAMETERS
from pipeline.run.parameters import Parameters

#: Numeric parameters Step 0 does not use, and why they are not tried here.
NOT_STEP0 = {name: "used by Steps 1-3 only (Step 0 checks its range when it parses the configuration)"
             for name in ("per_class", "min_training_superpixels", "training_seed", "epochs", "ensemble",
                          "batch_size", "validation_fraction", "target_se", "min_per_class", "sample_size",
                          "sample_seed")}
#: The value tried where a parameter has no largest value: far beyond any scene.
UNBOUNDED = {int: 10**9 + 1, float: 1e12}  # odd, for patch_width
#: Largest values the work grid of the crop allows, tried as well: one superpixel per pixel, the widest patch.
GRID_MAXIMA = {"n_segments": CROP_SIZE ** 2, "patch_width": 2 * CROP_SIZE - 1}
MEMORY_GIB, SECONDS = 4, 60
BANDS = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08", "swir": "B11"}


def numeric_parameters() -> dict:
    """Name -> (rule, default) of every int or float parameter (not true/false, not lists)."""
    return {name: (rule, default) for name, (rule, default) in Parameters.rules().items()
            if type(default) in (int, float)}


def extremes() -> list:
    """(name, which, value) for each numeric parameter Step 0 uses: its minimum and its maximum (or
    :data:`UNBOUNDED`), and where the work grid bounds it, :data:`GRID_MAXIMA`."""
    cases = []
    for name, (rule, default) in numeric_parameters().items():
        if name in NOT_STEP0:
            continue
        kind = type(default)
        cases += [(name, "minimum", kind(rule.minimum)),
                  (name, "maximum", kind(rule.maximum) if rule.maximum is not None else UNBOUNDED[kind])]
        if name in GRID_MAXIMA:
            cases.append((name, "largest the crop allows", GRID_MAXIMA[name]))
    return cases


def test_every_numeric_parameter_is_tried_or_said_why_not():
    step0_uses = {*STEP0_PARAMETERS, "tile_size"}
    for name in numeric_parameters():
        assert (name in step0_uses) != (name in NOT_STEP0), name
        assert name in NOT_STEP0 or Parameters.rules()[name][0].minimum is not None, f"{name}: no minimum"


@pytest.fixture(scope="module")
def cloudy_crop(tmp_path_factory, crop_scene, crop_files):
    """The crop as an L2A product whose SCL has a 20 x 20 px cloud (class 9), and its scene TOML."""
    from osgeo import gdal

    folder = tmp_path_factory.mktemp("extremes")
    product = write_product(folder / "S2A_MSIL2A_20210527_T30UVD.SAFE", crop_scene, "L2A")
    scl = np.full((CROP_SIZE // 2, CROP_SIZE // 2), 4, np.uint8)
    scl[40:60, 50:70] = 9
    gt = crop_scene["geotransform"]
    target = next(product.rglob("R20m")) / "T30UVD_20210527T113321_SCL_20m.jp2"
    gdal.GetDriverByName("JP2OpenJPEG").CreateCopy(str(target), mem_raster(scl, (gt[0], 20.0, 0.0, gt[3], 0.0, -20.0),
                                                                           crop_scene["wkt"]),
                                                   options=["QUALITY=100", "REVERSIBLE=YES"])
    config = write_scene(folder / "scene.toml", str(product), crop_files[1], CROP_PARAMETERS, bands=BANDS,
                         classes=CLASS_VALUES)
    return folder, config


def _limited():
    limit = MEMORY_GIB * 2**30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@pytest.mark.parametrize("name, which, value", extremes(), ids=lambda v: str(v))
def test_step0_at_an_accepted_extreme_finishes_or_refuses_in_one_line(cloudy_crop, tmp_path, name, which, value):
    folder, config = cloudy_crop
    flag = "--seed" if name == "split_seed" else "--" + name.replace("_", "-")
    code, _, error, seconds = run_script(0, ["--config", config, "--workdir", tmp_path / "work", flag, value],
                                         SECONDS, PROJECT, preexec_fn=_limited)
    print(f"{name} = {value} ({which}): exit {code} in {seconds:.1f} s; {error.strip()[:300]}")
    if code == 0:
        assert error == "", error[-2000:]
    else:
        assert code == 1 and error.startswith("error: ") and error.count("\n") == 1, error[-2000:]
        assert "out of memory" not in error, error  # refused before, for what the value means
