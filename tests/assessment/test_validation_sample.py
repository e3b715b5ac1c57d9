"""A designed validation sample: Olofsson's worked example through the design path, intervals that contain the
true areas over repeated draws on a real map, Step 3's --design-sample / --validation / --suggest, one-line errors."""
from __future__ import annotations

import csv
import html
import json
import shutil

import numpy as np
import pytest
from osgeo import ogr

import gdal_tif2rgb
import Step3_Accuracy_Assessment as step3
from pipeline.workflow import assess
from builders import fails_with_one_line, label_file, write_scene
from pipeline.handoffs import contract
from pipeline.inputs import point_files
from pipeline.assessment import validation_sample
from pipeline.assessment.report import prose
from pipeline.assessment.area_estimates import estimates
from pipeline.run.config import load_scene
from pipeline.core.errors import ConfigError

NAMES = ["deforestation", "forest gain", "stable forest", "stable non-forest"]
CONFUSION = np.array([[66, 0, 1, 2], [0, 55, 0, 1], [5, 8, 153, 9], [4, 12, 11, 313]])  # rows reference, cols map
PIXELS = np.array([200_000, 150_000, 3_200_000, 6_450_000])  # Olofsson et al. (2014) strata, 30 m pixels


def olofsson_map():
    """A 2000 x 5000 px map of 30 m pixels whose class areas are those of Olofsson et al.'s example."""
    pred_map = np.repeat(np.arange(4, dtype=np.uint8), PIXELS).reshape(2000, 5000)
    return pred_map, gdal_tif2rgb.Grid(2000, 5000, (500000.0, 30.0, 0.0, 6000000.0, 0.0, -30.0), utm_wkt())


def in_memory(pred_map: np.ndarray, k: int = 4) -> tuple:
    """``map_at`` and ``map_pixels`` of ``validation_sample.labelled_units`` for a map held in memory."""
    return (lambda rows, cols: pred_map[rows, cols]), np.bincount(pred_map.ravel(), minlength=256)[:k]


def utm_wkt() -> str:
    from osgeo import osr

    crs = osr.SpatialReference()
    crs.ImportFromEPSG(32630)
    return crs.ExportToWkt()


def test_olofsson_worked_example_through_a_labelled_geopackage(tmp_path):
    """The paper's Table 8 sample as points of a designed file, written, read back and estimated."""
    pred_map, grid = olofsson_map()
    rng = np.random.default_rng(0)
    points = CONFUSION.sum(axis=0)
    rows, cols, strata = validation_sample.draw_pixels(pred_map, points, rng)
    reference = np.concatenate([np.repeat(np.arange(4), CONFUSION[:, h]) for h in range(4)])  # per stratum, in order
    x0, dx, _, y0, _, dy = grid.geotransform
    fields = {"id": np.arange(1, 641), "map_class": [NAMES[h] for h in strata],
              "stratum_area_ha": PIXELS[strata] * 0.09, "inclusion_probability": (points / PIXELS)[strata],
              "map_run": ["run-a"] * 640, "reference": [NAMES[j] for j in reference]}
    path = tmp_path / "olofsson.gpkg"
    point_files.write_points(path, "validation_sample", x0 + (cols + 0.5) * dx, y0 + (rows + 0.5) * dy, fields,
                             grid.crs_wkt)
    for read in (path, path.with_suffix(".csv")):
        x, y, columns = point_files.read_points(read, grid.crs_wkt)
        units = validation_sample.labelled_units(read, x, y, columns, "reference", {n: [i] for i, n in enumerate(NAMES)},
                                                 *in_memory(pred_map), grid, 900.0, "run-a")
        result = estimates(units["tables"], units["strata"], units["population_units"], PIXELS * 0.09, NAMES,
                           interval="wald")  # the paper's figures
        got = [result["classes"][n]["estimated_area_ha"] for n in NAMES]
        assert got == pytest.approx([21_158, 11_686, 285_770, 581_386], abs=1)
        assert [result["classes"][n]["area_ci95_ha"] for n in NAMES] == pytest.approx([6_158, 3_756, 15_510, 16_282],
                                                                                      abs=2)
        assert [result["classes"][n]["producers_accuracy_se"] for n in NAMES] == pytest.approx(
            [0.1088, 0.1298, 0.0175, 0.0094], abs=1e-4)
        assert result["overall_accuracy"] == pytest.approx(0.9465, abs=1e-4)
        assert result["overall_accuracy_se"] == pytest.approx(0.00943, abs=1e-5)
        assert units["sample"]["labelled"] == 640 and "Stehman" not in units["sample"]["design"]


def test_design_sizes_and_points():
    pred_map, grid = olofsson_map()
    users = [0.7, 0.6, 0.9, 0.95]
    sample = validation_sample.design(pred_map, grid, NAMES, 900.0, users, 0.01, 75, 0, "run-a",
                                      np.random.default_rng(1))
    shares = PIXELS / PIXELS.sum()
    spread = np.sqrt(np.array(users) * (1 - np.array(users)))
    needed = int(np.ceil((shares @ spread) ** 2 / (0.01 ** 2 + (shares @ spread ** 2) / PIXELS.sum())))
    summary = sample["summary"]
    assert f"gives {needed}" in summary["size_rule"] and summary["points"] == needed
    per_stratum = [summary["strata"][n]["points"] for n in NAMES]
    assert sum(per_stratum) == needed
    rest = needed - 4 * 75  # 75 each, the rest in proportion to the strata's pixels beyond their first 75
    assert np.array(per_stratum) - 75 == pytest.approx(rest * (PIXELS - 75) / (PIXELS - 75).sum(), abs=1)
    x0, dx, _, y0, _, dy = grid.geotransform
    cols, rows = (sample["x"] - x0) / dx - 0.5, (sample["y"] - y0) / dy - 0.5
    assert np.allclose(cols, np.round(cols)) and np.allclose(rows, np.round(rows))  # pixel centres
    codes = pred_map[rows.round().astype(int), cols.round().astype(int)]
    assert [NAMES[c] for c in codes] == sample["fields"]["map_class"]
    assert len({(r, c) for r, c in zip(rows.round(), cols.round())}) == needed  # without replacement
    assert sample["fields"]["inclusion_probability"][0] == pytest.approx(per_stratum[0] / PIXELS[0])
    again = validation_sample.design(pred_map, grid, NAMES, 900.0, users, 0.01, 75, 0, "run-a",
                                     np.random.default_rng(1))
    assert np.array_equal(again["x"], sample["x"]) and np.array_equal(again["y"], sample["y"])
    assert validation_sample.design(pred_map, grid, NAMES, 900.0, users, 0.01, 75, 500, "run-a",
                                    np.random.default_rng(1))["summary"]["points"] == 500


@pytest.fixture(scope="module")
def assessed(step2_workdir, tmp_path_factory):
    """A copy of the subset's work folder after Steps 0 to 2, its arguments, map, reference codes and grid."""
    workdir, _, arguments = step2_workdir
    copy = tmp_path_factory.mktemp("validation") / "work"
    shutil.copytree(workdir, copy)
    arguments = [arguments[0], arguments[1], "--workdir", str(copy)]
    map_run = gdal_tif2rgb.read_layout(copy / "predMap.tif")[3][contract.STEP2_RUN_ITEM]
    pred_map = gdal_tif2rgb.read_window(copy / "predMap.tif", 1, np.uint8)[0]
    codes = gdal_tif2rgb.read_window(copy / "reference.tif", 1, np.uint8)[0]
    grid = gdal_tif2rgb.read_layout(copy / "predMap.tif")[0]
    return {"workdir": copy, "arguments": arguments, "map_run": map_run, "pred_map": pred_map, "codes": codes,
            "grid": grid}


def label_in_memory(sample: dict, codes: np.ndarray, grid, names) -> dict:
    """The designed sample's fields with ``reference`` filled in from the reference raster at each point."""
    x0, dx, _, y0, _, dy = grid.geotransform
    cols = np.floor((sample["x"] - x0) / dx).astype(int)
    rows = np.floor((sample["y"] - y0) / dy).astype(int)
    return {**sample["fields"], "reference": [names[c] for c in codes[rows, cols]]}


def test_designed_sample_intervals_contain_the_true_areas_about_95_percent_of_the_time(assessed):
    """The subset's reference labels every pixel, so its class areas are the truth. Over 200 designed samples of
    the real Step 2 map, each labelled from the reference, the share of 95 % intervals (4 classes, and the
    overall accuracy) that contain the truth is close to 0.95 with the adjusted intervals, and never below that of
    the Wald intervals."""
    pred_map, codes, grid = assessed["pred_map"], assessed["codes"], assessed["grid"]
    names = ["urban", "crop", "vegetation", "water"]
    k = len(names)
    mapped = pred_map < k
    assert (codes[mapped] < k).all()
    truth = np.bincount(codes[mapped], minlength=k)[:k] / 100.0  # hectares of 100 m2 pixels
    true_oa = float(np.mean(codes[mapped] == pred_map[mapped]))
    map_area = np.bincount(pred_map[mapped], minlength=k)[:k] / 100.0
    intervals = ("agresti-coull", "wald")
    covered, covered_oa, draws = dict.fromkeys(intervals, 0), dict.fromkeys(intervals, 0), 200
    the_map = in_memory(pred_map)
    for seed in range(draws):
        sample = validation_sample.design(pred_map, grid, names, 100.0, [None] * k, 0.02, 30, 0, "run",
                                          np.random.default_rng(seed))
        fields = label_in_memory(sample, codes, grid, names)
        units = validation_sample.labelled_units("memory", sample["x"], sample["y"], fields, "reference",
                                                 {n: [n] for n in names}, *the_map, grid, 100.0, "run")
        for interval in intervals:
            result = estimates(units["tables"], units["strata"], units["population_units"], map_area, names,
                               interval=interval)
            for name, true_area in zip(names, truth):
                entry = result["classes"][name]
                covered[interval] += abs(entry["estimated_area_ha"] - true_area) <= entry["area_ci95_ha"]
            covered_oa[interval] += abs(result["overall_accuracy"] - true_oa) <= result["overall_accuracy_ci95"]
    share = {interval: covered[interval] / (draws * k) for interval in intervals}
    share_oa = {interval: covered_oa[interval] / draws for interval in intervals}
    print(f"share of 95 % area intervals containing the true area: {share}; overall accuracy: {share_oa} "
          f"({draws} designed samples)")
    assert 0.9 <= share["agresti-coull"] <= 0.98 and share["agresti-coull"] >= share["wald"]
    assert 0.9 <= share_oa["agresti-coull"] <= 0.99 and share_oa["agresti-coull"] >= share_oa["wald"]


def test_design_label_and_estimate_through_step3(assessed, tmp_path, capsys, monkeypatch):
    workdir, arguments = assessed["workdir"], assessed["arguments"]
    names = ["urban", "crop", "vegetation", "water"]
    assert step3.main([*arguments, "--design-sample", "--sample-size", "80", "--min-per-class", "20"]) == 0
    designed = workdir / "validation_sample.gpkg"
    assert designed.is_file() and designed.with_suffix(".csv").is_file()
    dataset = ogr.Open(str(designed))  # kept while its layer is read
    layer = dataset.GetLayer(0)
    definition = layer.GetLayerDefn()
    assert [definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())] == [
        "id", "map_class", "stratum_area_ha", "inclusion_probability", "map_run", "reference"]
    assert layer.GetSpatialRef().GetAuthorityCode(None) == "27700"  # the map's CRS, British National Grid
    with open(designed.with_suffix(".csv"), newline="") as table:
        rows = list(csv.DictReader(table))
    assert len(rows) == layer.GetFeatureCount() >= 80 and all(r["map_run"] == assessed["map_run"] for r in rows)
    dataset = None

    labelled = tmp_path / "labelled.gpkg"
    shutil.copy(designed, labelled)
    label_file(labelled, assessed["codes"], assessed["grid"], names)
    assert step3.main([*arguments, "--validation", str(labelled)]) == 0
    metrics = json.loads((workdir / "metrics.json").read_text())
    validation, held_out = metrics["validation_sample"], metrics["area_estimates"]
    assert set(validation) == set(held_out) - {"confusion_matrix_pixels"}
    assert validation["sample"]["labelled"] == len(rows) and validation["sample"]["unlabelled_left_out"] == 0
    assert validation["total_area_ha"] == pytest.approx(324 * 339 / 100)
    report = (workdir / "report.html").read_text(encoding="utf-8")
    assert "Class areas and accuracy from the validation sample" in report and "Stehman" in report
    assert "validation sample of" in report  # the headline names its sample
    assert "Agresti and Coull 1998" in validation["interval_method"] and held_out["interval_method"].startswith("Wald")
    assert f"<b>Intervals</b>: {html.escape(prose(validation['interval_method']))}" in report
    # the validation sample's error matrix in area proportions, with its intervals, is the figure to cite
    cited = report[report.index("<figure id='headline-figure' class='cite'>"):]
    cited = cited[:cited.index("</figure>")]
    assert "Error matrix of the map from the validation sample, in estimated proportions of the mapped area" in cited
    proportions = validation["confusion_matrix_proportions"]
    assert all(f">{value:.4f}</td>" in cited for row in proportions for value in row)
    water = validation["classes"]["water"]
    assert f"{water['users_accuracy']:.3f} ± {water['users_accuracy_ci95']:.3f}" in cited
    assert "Class areas and area-weighted accuracy (held-out test blocks)" in report  # then among the diagnostics
    small = [name for name, n in validation["sample"]["labelled_per_stratum"].items() if n < 30]  # 20 each
    assert small and all(f"{name} ({validation['sample']['labelled_per_stratum'][name]})" in report for name in small)
    assert "Fewer than 30 labelled points in map class" in report

    # the map's classes at the points and its class areas read in windows of 100 px: the same estimates
    written = (workdir / "metrics.json").read_text()
    monkeypatch.setattr(assess, "WINDOW", 100)
    assert step3.main([*arguments, "--validation", str(labelled)]) == 0
    assert (workdir / "metrics.json").read_text() == written

    # a designed file that holds labels is never overwritten by a new design
    shutil.copy(labelled, designed)
    fails_with_one_line(step3.main, [*arguments, "--design-sample"], capsys, "holds labelled points")


@pytest.mark.parametrize("edit, fragments", [
    ("unknown", ("unknown class 'parking'", "reference")),
    ("outside", ("points lie outside the map",)),
    ("other_map", ("designed on another map",)),
    ("no_field", ("no field reference",)),
])
def test_bad_validation_files_are_one_line_errors(assessed, tmp_path, capsys, edit, fragments):
    arguments = assessed["arguments"]
    names = ["urban", "crop", "vegetation", "water"]
    sample = validation_sample.design(assessed["pred_map"], assessed["grid"], names, 100.0, [None] * 4, 0.05, 5, 0,
                                      assessed["map_run"], np.random.default_rng(0))
    fields = label_in_memory(sample, assessed["codes"], assessed["grid"], names)
    x, y = sample["x"], sample["y"].copy()
    if edit == "unknown":
        fields["reference"][3] = "parking"
    elif edit == "outside":
        y[0] += 1e5
    elif edit == "other_map":
        fields["stratum_area_ha"] = np.asarray(fields["stratum_area_ha"]) * 2
    else:
        del fields["reference"]
    path = tmp_path / "bad.gpkg"
    point_files.write_points(path, "validation_sample", x, y, fields, assessed["grid"].crs_wkt)
    fails_with_one_line(step3.main, [*arguments, "--validation", str(path)], capsys, str(path), *fragments)


def test_unlabelled_points_are_left_out_and_counted(assessed, tmp_path):
    names = ["urban", "crop", "vegetation", "water"]
    sample = validation_sample.design(assessed["pred_map"], assessed["grid"], names, 100.0, [None] * 4, 0.05, 10, 0,
                                      assessed["map_run"], np.random.default_rng(3))
    fields = label_in_memory(sample, assessed["codes"], assessed["grid"], names)
    fields["reference"] = [None if i % 5 == 0 else value for i, value in enumerate(fields["reference"])]
    units = validation_sample.labelled_units("memory", sample["x"], sample["y"], fields, "reference",
                                             {n: [n] for n in names}, *in_memory(assessed["pred_map"]),
                                             assessed["grid"], 100.0, assessed["map_run"])
    assert units["sample"]["unlabelled_left_out"] == len(range(0, len(sample["x"]), 5))
    assert units["sample"]["labelled"] + units["sample"]["unlabelled_left_out"] == len(sample["x"])
    # [classes] values are accepted in place of names, in any field
    fields["code"] = [{"urban": 3, "crop": 2, "vegetation": 1, "water": 4}[v] if v else None for v in fields["reference"]]
    by_value = validation_sample.labelled_units("memory", sample["x"], sample["y"], fields, "code",
                                                {"urban": [3], "crop": [2], "vegetation": [1], "water": [4]},
                                                *in_memory(assessed["pred_map"]), assessed["grid"], 100.0,
                                                assessed["map_run"])
    assert np.array_equal(by_value["tables"], units["tables"])


def test_a_later_map_is_assessed_with_the_strata_of_the_design(assessed):
    """Stehman (2014): strata from the map of the design, map classes from another map."""
    names = ["urban", "crop", "vegetation", "water"]
    pred_map = assessed["pred_map"]
    sample = validation_sample.design(pred_map, assessed["grid"], names, 100.0, [None] * 4, 0.05, 10, 0,
                                      assessed["map_run"], np.random.default_rng(4))
    fields = label_in_memory(sample, assessed["codes"], assessed["grid"], names)
    later = np.where(pred_map == 1, 2, pred_map).astype(np.uint8)  # a map without crop
    units = validation_sample.labelled_units("memory", sample["x"], sample["y"], fields, "reference",
                                             {n: [n] for n in names}, *in_memory(later), assessed["grid"], 100.0,
                                             "later-run")
    assert "Stehman 2014" in units["sample"]["design"]
    result = estimates(units["tables"], units["strata"], units["population_units"],
                       np.bincount(later.ravel(), minlength=4)[:4] / 100.0, names)
    assert result["classes"]["crop"]["users_accuracy"] is None  # no point is mapped crop any more
    assert result["classes"]["crop"]["producers_accuracy"] == 0.0
    assert sum(c["estimated_area_ha"] for c in result["classes"].values()) == pytest.approx(324 * 339 / 100)


def test_suggestions_are_the_most_uncertain_superpixels_spread_apart(assessed):
    workdir, arguments = assessed["workdir"], assessed["arguments"]
    assert step3.main([*arguments, "--suggest", "15"]) == 0
    x, y, columns = point_files.read_points(workdir / "suggested_samples.gpkg", assessed["grid"].crs_wkt)
    assert len(x) == 15 and set(columns) >= {"map_class", "uncertainty", "reference"}
    assert columns["uncertainty"] == sorted(columns["uncertainty"], reverse=True)
    distances = np.hypot(x[:, None] - x[None], y[:, None] - y[None]) / 10.0 + np.eye(15) * 1e9  # pixels
    assert distances.min() >= 25  # at least the patch width (or half the grid spacing of 15 points) apart
    assert all(value is None or value == "" for value in columns["reference"])


def test_the_toml_names_a_validation_sample_relative_to_itself(tmp_path):
    config = write_scene(tmp_path / "scene.toml", tmp_path / "image.tif", tmp_path / "reference.tif", {"target_se": 0.02})
    config.write_text(config.read_text().replace("[assessment]\n", '[assessment]\nvalidation = "samples/labelled.gpkg"\n'
                                                                     'validation_field = "class"\n'))
    scene = load_scene(config)
    assert scene.validation == (tmp_path / "samples" / "labelled.gpkg").resolve()
    assert scene.validation_field == "class" and scene.params.target_se == 0.02
    assert load_scene(write_scene(tmp_path / "plain.toml", tmp_path / "i.tif", tmp_path / "r.tif")).validation is None
    typo = write_scene(tmp_path / "typo.toml", tmp_path / "i.tif", tmp_path / "r.tif", {"target_se": 0.02})
    typo.write_text(typo.read_text().replace("target_se", "validaton = \"x.gpkg\"\ntarget_se"))
    with pytest.raises(ConfigError, match="unknown parameter 'validaton' in \\[assessment\\]"):
        load_scene(typo)
