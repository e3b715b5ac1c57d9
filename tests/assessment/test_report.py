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
from builders import PROJECT
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
    assert f"blocks {area['sample']['blocks']}" in dom and "probability sample True" in dom

    total, loaded = images_loaded(render(report.replace("</body>", COUNT_IMAGES + "</body>"), tmp_path / "counted"))
    assert total == loaded == 13  # 3 composites, maps, uncertainty, disagreement, split, learning curve, 5 matrices


@needs_chromium
def test_the_image_check_sees_a_broken_image(step3_workdir, tmp_path):
    workdir, _ = step3_workdir
    report = (workdir / "report.html").read_text(encoding="utf-8")
    broken = re.sub(r"src='data:image/png;base64,[^']+'", "src='split_map.png'", report, count=1)
    total, loaded = images_loaded(render(broken.replace("</body>", COUNT_IMAGES + "</body>"), tmp_path / "broken"))
    assert (total, loaded) == (13, 12)
