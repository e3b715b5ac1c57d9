"""report.html travels as one file: rendered alone by headless Chromium, every image loads, the headline numbers
and the class-area table are in the page, and no machine path or relative link is left in it.

How the browser check works: the report is copied alone into an empty folder and opened through a file:// URL
with ``--dump-dom``, which prints the DOM after the page has loaded. To learn whether every image decoded, a
second copy gets one script appended that, on the ``load`` event (fired only after every image has loaded or
failed), writes the number of <img> elements and of those with ``naturalWidth > 0`` into an attribute of
<body>; ``--virtual-time-budget`` lets the page settle before the dump. A copy with one image pointing at a
missing file shows that the check sees a broken image.
"""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import pytest

import Step3_Accuracy_Assessment as step3
from builders import PROJECT, SUBSET_PARAMETERS
from pipeline.assessment.report import with_interval

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (make test-setup "
                                                             "installs Debian's chromium package)")
COUNT_IMAGES = """<script>addEventListener("load", () => {
  const images = [...document.images];
  document.body.setAttribute("data-images", images.length + "/" + images.filter(i => i.complete && i.naturalWidth > 0).length);
});</script>"""


@pytest.fixture(scope="module")
def step3_workdir(step2_workdir):
    """Work folder after Step 3 ran on the subset's Steps 0-2 outputs, and its metrics."""
    workdir, _, arguments = step2_workdir
    assert step3.main(arguments) == 0
    return workdir, json.loads((workdir / "metrics.json").read_text())


def render(page_text: str, folder) -> str:
    """The DOM headless Chromium builds from ``page_text``, saved alone in the empty ``folder`` as a file."""
    folder.mkdir()
    page = folder / "report.html"
    page.write_text(page_text, encoding="utf-8")
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run",
               f"--user-data-dir={folder.parent / (folder.name + '-profile')}", "--virtual-time-budget=5000",
               "--dump-dom", page.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    assert sorted(p.name for p in folder.iterdir()) == ["report.html"]  # alone: nothing beside it to link to
    return result.stdout


def images_loaded(dom: str) -> tuple[int, int]:
    """(images, images with naturalWidth > 0) as counted by :data:`COUNT_IMAGES`."""
    total, loaded = re.search(r'data-images="(\d+)/(\d+)"', dom).groups()
    return int(total), int(loaded)


def test_report_holds_no_path_and_no_relative_link(step3_workdir):
    workdir, _ = step3_workdir
    report = (workdir / "report.html").read_text(encoding="utf-8")
    links = re.findall(r"(?:src|href)=['\"]([^'\"]+)['\"]", report)
    assert len(links) >= 12 and all(link.startswith("data:image/png;base64,") for link in links)
    assert str(workdir) not in report and "/tmp/" not in report and str(PROJECT) not in report and "/work/" not in report
    assert "sen2_20210527_aber_subset.tif" in report  # the image by its file name


@needs_chromium
def test_report_renders_alone_in_chromium_with_every_image(step3_workdir, tmp_path):
    workdir, metrics = step3_workdir
    report = (workdir / "report.html").read_text(encoding="utf-8")
    dom = render(report, tmp_path / "alone")
    area = metrics["area_estimates"]
    headline = with_interval(area["overall_accuracy"], area["overall_accuracy_ci95"], 3)
    assert f'<b id="headline">overall accuracy {headline} (pixel-level, area-weighted, 95 % CI;' in dom
    area = metrics["area_estimates"]
    for name, estimate in area["classes"].items():
        row = (f"<th>{html.escape(name)}</th><td>{estimate['map_area_ha']:,.1f}</td>"
               f"<td>{with_interval(estimate['estimated_area_ha'], estimate['area_ci95_ha'], 1)}</td>")
        assert row in dom, name
    assert f"overall accuracy {with_interval(area['overall_accuracy'], area['overall_accuracy_ci95'], 3)}" in dom
    assert "Olofsson, P., Foody, G. M." in dom and "Stehman, S. V. (1997)" in dom
    assert f"{area['sample']['blocks']} test blocks out of the {area['sample']['population_blocks']} blocks" in dom
    assert "probability sample True" not in dom and "probability_sample" not in dom  # raw values stay in metrics.json

    total, loaded = images_loaded(render(report.replace("</body>", COUNT_IMAGES + "</body>"), tmp_path / "counted"))
    assert total == loaded == 15  # map, uncertainty, 3 composites, reference maps, disagreement, split, learning
    # curve, 6 matrices


@needs_chromium
def test_the_image_check_sees_a_broken_image(step3_workdir, tmp_path):
    workdir, _ = step3_workdir
    report = (workdir / "report.html").read_text(encoding="utf-8")
    broken = re.sub(r"src='data:image/png;base64,[^']+'", "src='split_map.png'", report, count=1)
    total, loaded = images_loaded(render(broken.replace("</body>", COUNT_IMAGES + "</body>"), tmp_path / "broken"))
    assert (total, loaded) == (15, 14)


#: Appended to a copy of the report: on ``load``, what a reader sees, as attributes of <body> (JSON).
INSPECT_PAGE = """<script>addEventListener("load", () => {
  const text = e => (e ? e.textContent.replace(/\\s+/g, " ").trim() : "");
  const images = [...document.images];
  const figures = [...document.querySelectorAll("figure")];
  document.body.setAttribute("data-page", JSON.stringify({
    images: images.length,
    uncaptioned: images.filter(i => !i.closest("figure") || text(i.closest("figure").querySelector("figcaption")).length < 40).length,
    captions: figures.map(f => text(f.querySelector("figcaption"))),
    headings: [...document.querySelectorAll("h1, h2, h3, h4")].map(text),
    cited: figures.filter(f => f.querySelector("figcaption .cite-mark")).map(f => f.id),
    scroll_width: document.documentElement.scrollWidth,
    viewport: window.innerWidth,
    code_blocks: document.querySelectorAll("code, pre").length,
    body: text(document.body),
  }));
});</script>"""


def inspect(page_text: str, folder, width: int = 800) -> dict:
    """What headless Chromium, in a window ``width`` px wide, shows of ``page_text`` (see :data:`INSPECT_PAGE`)."""
    folder.mkdir()
    page = folder / "report.html"
    page.write_text(page_text.replace("</body>", INSPECT_PAGE + "</body>"), encoding="utf-8")
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
               f"--user-data-dir={folder.parent / (folder.name + '-profile')}", "--virtual-time-budget=5000",
               f"--window-size={width},3000", "--dump-dom", page.as_uri()]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
    return json.loads(html.unescape(re.search(r'data-page="([^"]*)"', dom).group(1)))


@pytest.fixture(scope="module")
def described_report(step3_workdir, subset_config, tmp_path_factory):
    """report.html of the Step 3 run, written again for the scene with a ``title`` and ``[descriptions]``."""
    from pipeline.assessment import report
    from pipeline.run.config import load_scene
    from pipeline.run.outputs import OutputSet

    workdir, metrics = step3_workdir
    folder = tmp_path_factory.mktemp("described")
    config = folder / "scene.toml"
    config.write_text(subset_config.read_text().replace('name = "test"', 'name = "test"\ntitle = "Aberystwyth, May 2021"')
                      + '[descriptions]\ncrop = "improved pasture"\nvegetation = "forest"\n', encoding="utf-8")
    out = folder / "out"
    out.mkdir()
    for png in workdir.glob("*.png"):
        shutil.copy(png, out / png.name)
    report.write_report(load_scene(config, workdir), OutputSet(out, ["report.html"], out), metrics)
    return (out / "report.html").read_text(encoding="utf-8"), metrics


@needs_chromium
@pytest.mark.parametrize("width", [800, 1400])
def test_every_image_is_a_captioned_figure_and_the_page_fits_the_width(step3_workdir, tmp_path, width):
    workdir, _ = step3_workdir
    page = inspect((workdir / "report.html").read_text(encoding="utf-8"), tmp_path / "page", width)
    assert page["images"] == 15 and page["uncaptioned"] == 0
    assert all(caption.startswith("Figure ") and len(caption) > 40 for caption in page["captions"])
    assert page["viewport"] == width and page["scroll_width"] <= width  # no horizontal scrolling at a thesis width


@needs_chromium
def test_the_width_check_sees_a_page_wider_than_the_window(step3_workdir, tmp_path):
    workdir, _ = step3_workdir
    wide = (workdir / "report.html").read_text(encoding="utf-8").replace("</h1>", "</h1><div style='width:1200px'>x</div>")
    assert inspect(wide, tmp_path / "wide")["scroll_width"] > 800


@needs_chromium
def test_one_headline_figure_to_cite_its_design_named_and_plain_headings(step3_workdir, tmp_path):
    from pipeline.assessment.accuracy import ASSESSMENTS

    workdir, metrics = step3_workdir
    page = inspect((workdir / "report.html").read_text(encoding="utf-8"), tmp_path / "page")
    assert page["cited"] == ["headline-figure"]
    cited = next(c for c in page["captions"] if "cite this" in c)
    assert "Error matrix of the map from the held-out test blocks, in estimated proportions of the mapped area" in cited
    assert "Accuracy to cite" in page["headings"] and "Diagnostics" in page["headings"] and "Methods" in page["headings"]
    blocks = metrics["area_estimates"]["sample"]["blocks"]
    assert f"a cluster sample of {blocks} blocks of 64 × 64 px (each block a sampling unit" in page["body"]
    for heading in page["headings"]:
        assert "_" not in heading and not any(name in heading for name in ASSESSMENTS), heading
    assert "Best any superpixel classifier could do with this segmentation" in page["headings"]
    assert page["headings"][0] == "Test"  # the scene's name with a capital, without a title


@needs_chromium
def test_standard_terms_readable_formulas_and_a_methods_paragraph(step3_workdir, tmp_path):
    workdir, _ = step3_workdir
    page = inspect((workdir / "report.html").read_text(encoding="utf-8"), tmp_path / "page")
    body = page["body"]
    assert body.count("user's accuracy (precision)") == 6 and body.count("producer's accuracy (recall)") == 6
    assert "user's accuracy ± 95 % CI" in body and "producer's accuracy ± 95 % CI" in body
    assert re.sub(r"user's accuracy \(precision\)|tutorial's precision", "", body).count("precision") == 0
    assert page["code_blocks"] == 0 and "p̂ii / p̂i·" in body and "+-" not in body  # HTML, not a monospace block
    run = json.loads((workdir / "run.json").read_text())
    methods = body[body.index("The land-cover map of Test was made"):]
    for fact in ("n_segments = 1,500", "compactness = 30", "blocks of 64 × 64 pixels", "150 patches per class",
                 f"for {SUBSET_PARAMETERS['epochs']} epochs with batch size 32",
                 "each epoch's patches centred on pixels drawn at random in their superpixels", f"GDAL {run['packages']['GDAL']}",
                 f"scikit-image {run['packages']['scikit-image']}",
                 "The random seeds were 42 for the split and 42 for the balanced set and the training",
                 "OSGB36 / British National Grid (EPSG:27700)"):
        assert fact in methods, fact


@needs_chromium
def test_title_and_class_descriptions_appear_in_legends_and_tables(described_report, tmp_path):
    page_text, metrics = described_report
    page = inspect(page_text, tmp_path / "page")
    assert page["headings"][0] == "Aberystwyth, May 2021"
    map_caption = next(c for c in page["captions"] if c.startswith("Figure 3. Land-cover map of Aberystwyth, May 2021"))
    assert "crop (improved pasture)" in map_caption and "vegetation (forest)" in map_caption and "water." in map_caption
    assert "<th>crop<span class='desc'>improved pasture</span></th>" in page_text  # in the tables' class cells
    assert page_text.count("<span class='desc'>forest</span>") >= 8  # error matrix, area table, 6 assessments
    assert page["uncaptioned"] == 0 and page["scroll_width"] <= 800


def test_error_matrix_rows_follow_the_class_codes_not_the_sorted_names(step3_workdir):
    from pipeline.assessment.report import error_matrix_table

    _, metrics = step3_workdir
    area = metrics["area_estimates"]
    table = error_matrix_table(area, metrics["class_names"])
    rows = re.findall(r"<tr><th>(\w+)</th>((?:<td[^>]*>[^<]*</td>)+)", table)
    p = area["confusion_matrix_proportions"]
    for i, name in enumerate(metrics["class_names"]):
        cells = dict(rows)[name]
        assert f">{p[i][i]:.4f}</td>" in cells and f">{sum(p[i]):.4f}</td>" in cells, name


def test_without_a_probability_sample_the_test_superpixels_are_the_headline(step3_workdir, subset_config, tmp_path):
    from pipeline.assessment import report
    from pipeline.assessment.area_estimates import without_estimates
    from pipeline.run.config import load_scene
    from pipeline.run.outputs import OutputSet

    workdir, metrics = step3_workdir
    area = without_estimates(metrics["area_estimates"])
    area["sample"] = {**metrics["area_estimates"]["sample"], "probability_sample": False, "reference_coverage": 0.2,
                      "note": "not a probability sample of the map: the reference labels 20.0% of the mapped pixels"}
    for png in workdir.glob("*.png"):
        shutil.copy(png, tmp_path / png.name)
    report.write_report(load_scene(subset_config, workdir), OutputSet(tmp_path, ["report.html"], tmp_path),
                        {**metrics, "area_estimates": area})
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    cited = page[page.index("<figure id='headline-figure' class='cite'>"):]
    cited = cited[:cited.index("</figure>")]
    assert "title='confusion_superpixel_test.png'" in cited and "Test superpixels (superpixel level)." in cited
    assert page.count("title='confusion_superpixel_test.png'") == 1 and page.count(".</b> <span class='cite-mark'>cite this</span>") == 1  # one figure
    assert "Not a probability sample of the map: the reference labels 20.0%" in page
    assert "None" not in page
