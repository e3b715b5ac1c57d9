"""Scale benchmark: a whole Sentinel-2 tile (10980 x 10980 px) through all four steps, tiled on a Dask
LocalCluster, with the wall time, the peak memory of the whole process tree and the hand-off sizes per step.

The scene is the real demo scene mirrored to ``--size`` px (its 5 used bands, and the reference mirrored the
same way), written window by window so that building it needs little memory. Each step runs as its own script
in a child process: Step 0 tiled (``--tile-size``, ``--workers``), Step 1, Step 2 training ``--epochs`` epochs
and mapping (``step2_train``), Step 3 on that map, then Step 2 again applying the model with ``--model``
(``step2_predict``: prediction and painting alone). A sampler thread adds up the resident memory of each child and all its descendants
(the Dask scheduler and workers) twice a second. Prints a table and writes ``benchmarks/results_scale.json``
(per step: ``wall_s``, ``peak_rss_gib``, ``parts_s`` from ``run.json``, ``hand_offs_mb``). Run with
``make bench-scale``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

import gdal_tif2rgb
from pipeline.handoffs import contract
from pipeline.run.config import DEFAULT_CONFIG, load_scene
from pipeline.core import vocabulary

BANDS = ("blue", "green", "red", "nir", "swir")


def mirrored(indices: np.ndarray, length: int) -> np.ndarray:
    """Source index of each of ``indices`` in a run of ``length`` repeated by mirroring (..., 0..n-1, n-1..0, ...).

    >>> mirrored(np.arange(7), 3).tolist()
    [0, 1, 2, 2, 1, 0, 0]
    """
    position = indices % (2 * length)
    return np.where(position < length, position, 2 * length - 1 - position)


def build_big_scene(folder: Path, size: int, tile_size: int, n_segments: int) -> Path:
    """Write a ``size`` px mirror of the demo scene's 5 used bands and reference, window by window, and its TOML
    (``n_segments`` superpixels, tiles of ``tile_size`` px, so that every step reads the same settings)."""
    demo = load_scene(DEFAULT_CONFIG)
    image, grid, _ = gdal_tif2rgb.read_bands(demo.image, [demo.bands[name] for name in BANDS], dtype=np.float32)
    reference = gdal_tif2rgb.read_window(demo.reference, 1, np.int32)[0]
    big = gdal_tif2rgb.Grid(size, size, grid.geotransform, grid.crs_wkt)
    folder.mkdir(parents=True, exist_ok=True)
    with gdal_tif2rgb.geotiff_writer(folder / "image.tif", big, len(BANDS), np.uint16) as write_image, \
            gdal_tif2rgb.geotiff_writer(folder / "reference.tif", big, 1, reference.dtype, nodata=0) as write_reference:
        for row in range(0, size, tile_size):
            rows = mirrored(np.arange(row, min(row + tile_size, size)), grid.rows)
            for col in range(0, size, tile_size):
                cols = mirrored(np.arange(col, min(col + tile_size, size)), grid.cols)
                write_image(image[:, rows[:, None], cols[None, :]].astype(np.uint16), row, col)
                write_reference(reference[rows[:, None], cols[None, :]], row, col)
    classes = DEFAULT_CONFIG.read_text()
    classes = classes[classes.index("[classes]"):classes.index("[run]")]
    config = folder / "scene.toml"
    config.write_text('name = "s2_tile"\nimage = "image.tif"\nreference = "reference.tif"\n[bands]\n'
                      + "".join(f"{name} = {i + 1}\n" for i, name in enumerate(BANDS)) + classes
                      + f"[superpixels]\nn_segments = {n_segments}\n[tiling]\ntile_size = {tile_size}\n")
    return config


def run_measured(command: list[str]) -> dict:
    """Run ``command``; wall time and peak resident memory of it and all its descendants together."""
    import psutil

    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0]

    def sample():
        parent = psutil.Process(process.pid)
        while process.poll() is None:
            try:
                tree = [parent, *parent.children(recursive=True)]
                peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.5)

    start = time.perf_counter()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = process.communicate()
    wall = time.perf_counter() - start
    sampler.join()
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{output[-3000:]}")
    return {"wall_s": round(wall, 1), "peak_rss_gib": round(peak[0] / 2**30, 2), "log_tail": output[-1500:]}


def hand_off_sizes(workdir: Path) -> dict:
    """Size in MB of every hand-off (``.mat``, ``.tif``, ``model.keras``) in ``workdir``."""
    return {path.name: round(path.stat().st_size / 1e6, 1) for path in sorted(workdir.iterdir())
            if path.suffix in (".mat", ".tif", ".keras")}


def step_timings(workdir: Path, step: str) -> dict:
    """The ``timings_s`` that ``step`` (a script's name without ``.py``) recorded in ``run.json``."""
    return json.loads((workdir / "run.json").read_text())["steps"][step].get("timings_s", {})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=10980, help="scene side in pixels (default: 10980)")
    parser.add_argument("--n-segments", type=int, default=400000, help="SLIC superpixels (default: 400000)")
    parser.add_argument("--tile-size", type=int, default=2048, help="tile side in pixels (default: 2048)")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster workers (default: 2)")
    parser.add_argument("--folder", type=Path, default=BENCH_DIR / "scenes", help="scene and outputs folder")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results_scale.json", help="results file")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs of Step 2 (default: 2)")
    args = parser.parse_args(argv)
    folder = args.folder / f"s2_tile_{args.size}"
    workdir = folder / "work"
    print(f"building a {args.size} x {args.size} px scene in {folder} ...", flush=True)
    start = time.perf_counter()
    config = build_big_scene(folder, args.size, args.tile_size, args.n_segments)
    results = {"scene_px": [args.size, args.size], "megapixels": round(args.size**2 / 1e6, 1),
               "tile_size": args.tile_size, "workers": args.workers, "epochs": args.epochs,
               "build_s": round(time.perf_counter() - start, 1)}
    step = {name: [sys.executable, str(BENCH_DIR.parent / f"{name}.py"), "--config", str(config), "--workdir",
                   str(workdir)] for name in (vocabulary.STEP0[:-3], vocabulary.STEP1[:-3], vocabulary.STEP2[:-3],
                                              vocabulary.STEP3[:-3])}
    tiled = ["--workers", str(args.workers)]
    runs = {
        "step0": (vocabulary.STEP0, [*step[vocabulary.STEP0[:-3]], *tiled]),
        "step1": (vocabulary.STEP1, step[vocabulary.STEP1[:-3]]),
        "step2_train": (vocabulary.STEP2, [*step[vocabulary.STEP2[:-3]], "--epochs", str(args.epochs), *tiled,
                                         "--runs-dir", str(folder / "runs")]),
        "step3": (vocabulary.STEP3, step[vocabulary.STEP3[:-3]]),  # on the map of the model trained here
        "step2_predict": (vocabulary.STEP2, [*step[vocabulary.STEP2[:-3]], "--model", str(folder / "model.keras"),
                                           *tiled])}
    for key, (script, command) in runs.items():
        print(f"{key}: {' '.join(command[1:])} ...", flush=True)
        results[key] = run_measured(command)
        del results[key]["log_tail"]
        results[key].update(parts_s=step_timings(workdir, script[:-3]), hand_offs_mb=hand_off_sizes(workdir),
                            s_per_megapixel=round(results[key]["wall_s"] / results["megapixels"], 2))
        if key == "step2_train":  # the model applied in the next run: a copy outside the work folder
            shutil.copy2(workdir / contract.MODEL_FILE, folder / contract.MODEL_FILE)
            shutil.copy2(workdir / contract.MODEL_CARD, folder / contract.MODEL_CARD)
        print(f"  {results[key]['wall_s']} s, peak {results[key]['peak_rss_gib']} GiB (whole process tree)",
              flush=True)
    results["superpixels"] = json.loads((workdir / "run.json").read_text())["steps"][vocabulary.STEP0[:-3]][
        "superpixels"]
    print(f"scene {args.size} x {args.size} px ({results['megapixels']} Mpx), {results['superpixels']} superpixels, "
          f"tiles of {args.tile_size} px, {args.workers} workers")
    for key in runs:
        r = results[key]
        print(f"{key:<14} {r['wall_s']:>8} s  {r['s_per_megapixel']:>6} s/Mpx  peak {r['peak_rss_gib']} GiB")
    print("hand-offs (MB):", json.dumps(results["step3"]["hand_offs_mb"]))  # all made by then
    args.output.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
