"""A person's labels are never lost: --design-sample refuses to replace a validation sample holding a label in
any field of either format, a point given twice is refused, and a validation file Step 3 cannot use fails in one
line before any long work (the random forest baseline never starts)."""
from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from osgeo import gdal, ogr

import gdal_tif2rgb
import Step3_Accuracy_Assessment as step3
from builders import assert_one_line, label_file, snapshot

NAMES = ["urban", "crop", "vegetation", "water"]
FOREST = "random forest baseline"  # the log line of Step 3's longest work


@pytest.fixture(scope="module")
def designed(step2_workdir, tmp_path_factory):
    """A copy of the subset's work folder after Steps 0 to 2 with a fresh designed sample, its arguments, the
    designed files' bytes, the reference codes and grid."""
    workdir, _, arguments = step2_workdir
    copy = tmp_path_factory.mktemp("labels") / "work"
    shutil.copytree(workdir, copy)
    arguments = [arguments[0], arguments[1], "--workdir", str(copy)]
    assert step3.main([*arguments, "--design-sample", "--sample-size", "40", "--min-per-class", "5"]) == 0
    files = {name: (copy / name).read_bytes() for name in ("validation_sample.gpkg", "validation_sample.csv")}
    return {"workdir": copy, "arguments": arguments, "files": files,
            "codes": gdal_tif2rgb.read_window(copy / "reference.tif", 1, np.uint8)[0],
            "grid": gdal_tif2rgb.read_layout(copy / "predMap.tif")[0]}


def fresh_design(designed) -> None:
    """Put the designed, unlabelled files back in the work folder."""
    for name, content in designed["files"].items():
        (designed["workdir"] / name).write_bytes(content)


def add_gpkg_field(path, field: str, value) -> None:
    """Add ``field`` to the GeoPackage's layer (as a person in QGIS) and set it on its first point."""
    dataset = gdal.OpenEx(str(path), gdal.OF_VECTOR | gdal.OF_UPDATE)
    layer = dataset.GetLayer(0)
    if layer.GetLayerDefn().GetFieldIndex(field) < 0:
        layer.CreateField(ogr.FieldDefn(field, ogr.OFTInteger if isinstance(value, int) else ogr.OFTString))
    feature = layer.GetNextFeature()
    feature.SetField(field, value)
    layer.SetFeature(feature)
    dataset = None


def edit_csv(path, field: str, value) -> None:
    """Type ``value`` into ``field`` of the CSV's first row (a new column if the field is new), as in a
    spreadsheet."""
    with open(path, newline="", encoding="utf-8") as table:
        rows = list(csv.reader(table))
    if field not in rows[0]:
        rows = [row + [field if i == 0 else ""] for i, row in enumerate(rows)]
    rows[1][rows[0].index(field)] = str(value)
    with open(path, "w", newline="", encoding="utf-8") as table:
        csv.writer(table).writerows(rows)


@pytest.mark.parametrize("file_format", ["gpkg", "csv"])
@pytest.mark.parametrize("field, value, flags", [
    ("reference", "water", []),
    ("label", "crop", ["--validation-field", "label"]),
    ("label", "crop", []),  # labels in a field of the person's own, even without naming it
    ("Klasse", 3, []),  # a [classes] value, a number
    ("notes", "  unsure: maybe crop", []),
])
def test_a_design_never_replaces_a_file_holding_a_label(designed, capsys, file_format, field, value, flags):
    fresh_design(designed)
    path = designed["workdir"] / f"validation_sample.{file_format}"
    (add_gpkg_field if file_format == "gpkg" else edit_csv)(path, field, value)
    before = snapshot(designed["workdir"])
    assert step3.main([*designed["arguments"], *flags, "--design-sample", "--seed", "7"]) == 1
    assert_one_line(capsys.readouterr().err, [str(path), field, "move it"])
    assert snapshot(designed["workdir"]) == before  # both files, every byte


@pytest.mark.parametrize("content", [b"", b"id,reference\n1,water\n", b"\x00\xff" * 50, "gpkg cut short"])
def test_a_design_never_replaces_a_file_it_cannot_read(designed, capsys, content):
    fresh_design(designed)
    path = designed["workdir"] / "validation_sample.gpkg"
    path.write_bytes(designed["files"][path.name][:40_000] if content == "gpkg cut short" else content)
    before = snapshot(designed["workdir"])
    assert step3.main([*designed["arguments"], "--design-sample"]) == 1
    assert_one_line(capsys.readouterr().err, [str(path), "cannot be read", "move it"])
    assert snapshot(designed["workdir"]) == before


def test_a_design_holding_no_label_is_replaced(designed):
    """The only file --design-sample replaces: a design of its own whose `reference` is still empty (an empty
    field a person added counts as no label)."""
    fresh_design(designed)
    path = designed["workdir"] / "validation_sample.gpkg"
    add_gpkg_field(path, "label", "")
    edit_csv(path.with_suffix(".csv"), "reference", " ")
    assert step3.main([*designed["arguments"], "--design-sample", "--seed", "7"]) == 0
    assert path.read_bytes() != designed["files"][path.name]


def labelled_copy(designed, tmp_path):
    """The designed GeoPackage labelled from the reference, outside the work folder."""
    path = tmp_path / "labelled.gpkg"
    path.write_bytes(designed["files"]["validation_sample.gpkg"])
    label_file(path, designed["codes"], designed["grid"], NAMES)
    return path


def fails_before_the_forest(designed, capsys, path, *fragments) -> None:
    """Step 3 with ``--validation path`` exits 1 with one stderr line naming the file, before the random forest
    baseline starts, and leaves the work folder and the file as they were."""
    before, given = snapshot(designed["workdir"]), path.read_bytes()
    assert step3.main([*designed["arguments"], "--validation", str(path)]) == 1
    out, err = capsys.readouterr()
    assert_one_line(err, [str(path), *fragments])
    assert FOREST not in out, "the validation file was checked only after the long work"
    assert snapshot(designed["workdir"]) == before and path.read_bytes() == given


@pytest.mark.parametrize("copy", ["same id and location", "same location, new id", "same id, elsewhere"])
def test_a_point_given_twice_is_refused(designed, tmp_path, capsys, copy):
    path = labelled_copy(designed, tmp_path)
    dataset = gdal.OpenEx(str(path), gdal.OF_VECTOR | gdal.OF_UPDATE)
    layer = dataset.GetLayer(0)
    pasted = layer.GetFeature(3).Clone()
    pasted.SetFID(-1)
    if copy == "same location, new id":
        pasted.SetField("id", 1000)
    if copy == "same id, elsewhere":
        other = layer.GetFeature(9)  # held while its geometry is copied
        pasted.SetGeometry(other.GetGeometryRef().Clone())  # at another point's place: still id 3
        layer.DeleteFeature(9)
    layer.CreateFeature(pasted)
    dataset = None
    fails_before_the_forest(designed, capsys, path, "id 3", "counts once")


@pytest.mark.parametrize("name, content", [
    ("empty.gpkg", b""), ("text.gpkg", b"x,y,reference\n1,2,water\n"), ("notes.txt", b"urban at the harbour\n"),
    ("empty.csv", b""), ("binary.csv", bytes(range(256)) * 4), ("no_xy.csv", b"id,reference\n1,water\n"),
    ("cut.gpkg", "cut short"), ("no_field.gpkg", "no reference field"), ("unknown.gpkg", "unknown class"),
])
def test_a_validation_file_step3_cannot_use_fails_before_long_work(designed, tmp_path, capsys, name, content):
    path = tmp_path / name
    if content == "cut short":
        path.write_bytes(labelled_copy(designed, tmp_path).read_bytes()[:40_000])
    elif isinstance(content, str):
        labelled = labelled_copy(designed, tmp_path)
        if content == "unknown class":
            label_file(labelled, designed["codes"], designed["grid"], NAMES, value="parking")
        shutil.copy(labelled, path)
        if content == "no reference field":
            dataset = gdal.OpenEx(str(path), gdal.OF_VECTOR | gdal.OF_UPDATE)
            layer = dataset.GetLayer(0)
            layer.DeleteField(layer.GetLayerDefn().GetFieldIndex("reference"))
            dataset = None
    else:
        path.write_bytes(content)
    fails_before_the_forest(designed, capsys, path)
