"""Scale benchmark: a whole Sentinel-2 tile (10980 x 10980 px) through Step 0 and Step 2's prediction in tiled
mode on a Dask LocalCluster, with the wall time and the peak memory of the whole process tree.

The scene is the real demo scene mirrored to ``--size`` px (its 5 used bands, and the reference mirrored the
same way), written window by window so that building it needs little memory. Step 0 runs as a child process
(``--tile-size``, ``--workers``); then an untrained tutorial CNN (prediction cost does not depend on the
weights) predicts every superpixel on the cluster and the map is painted window by window, in a second child.
A sampler thread adds up the resident memory of each child and all its descendants (the Dask scheduler and
workers) twice a second. Prints a table and writes ``benchmarks/results_scale.json``. Run with
``make bench-scale``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

import gdal_tif2rgb  # noqa: E402
from pipeline import contract  # noqa: E402
from pipeline.config import DEFAULT_CONFIG, load_scene  # noqa: E402

BANDS = ("blue", "green", "red", "nir", "swir")


def mirrored(indices: np.ndarray, length: int) -> np.ndarray:
    """Source index of each of ``indices`` in a run of ``length`` repeated by mirroring (..., 0..n-1, n-1..0, ...).

    >>> mirrored(np.arange(7), 3).tolist()
    [0, 1, 2, 2, 1, 0, 0]
    """
    position = indices % (2 * length)
    return np.where(position < length, position, 2 * length - 1 - position)


def build_big_scene(folder: Path, size: int, tile_size: int) -> Path:
    """Write a ``size`` px mirror of the demo scene's 5 used bands and reference, window by window."""
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
                      + "".join(f"{name} = {i + 1}\n" for i, name in enumerate(BANDS)) + classes)
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


def predict_and_paint(config: Path, workdir: Path, tile_size: int, workers: int) -> None:
    """Child process: an untrained tutorial CNN predicts every superpixel on the cluster; the map is painted."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from pipeline import cluster, cnn, prediction_maps, tiled_prediction
    from pipeline.config import Parameters
    from pipeline.outputs import open_outputs

    scene = load_scene(config, workdir, {"tile_size": tile_size})
    channels = Parameters().train_layers
    step0 = contract.load(contract.SAMPLES, scene.workdir, ["labels", contract.PROVENANCE])
    n = len(step0["labels"])
    step0_record = contract.provenance_of(step0, contract.SAMPLES.path(scene.workdir), contract.STEP0)
    model = cnn.build_cnn((scene.params.patch_width, scene.params.patch_width, len(channels)), len(scene.classes))
    model_path = scene.output("model.keras")
    with gdal_tif2rgb.atomic_output(model_path) as temporary:
        model.save(temporary)
    start = time.perf_counter()
    with cluster.dask_client(None, workers) as client:
        probabilities = tiled_prediction.predict_on_cluster(scene.workdir, model_path, client, n, channels)
    predict_s = time.perf_counter() - start
    grid = contract.raster_grid(contract.LAYERS, scene.workdir, step0_record)
    start = time.perf_counter()
    with open_outputs(scene.workdir, ("predMap.tif", "predMap.png", "predMap.qml", "uncertainty.tif",
                                      "uncertainty.png")) as out:  # only what it writes: the set replaces those
        blocks = prediction_maps.painted_windows(scene, step0_record, grid, probabilities.argmax(axis=1).astype(
            np.uint8), (1 - probabilities.max(axis=1)).astype(np.float32))
        prediction_maps.write_maps(out, scene.class_names, grid, blocks, contract.new_run(contract.STEP2)["run"])
    print(json.dumps({"superpixels": n, "predict_s": round(predict_s, 1), "paint_s": round(time.perf_counter() - start, 1)}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=10980, help="scene side in pixels (default: 10980)")
    parser.add_argument("--n-segments", type=int, default=400000, help="SLIC superpixels (default: 400000)")
    parser.add_argument("--tile-size", type=int, default=2048, help="tile side in pixels (default: 2048)")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster workers (default: 2)")
    parser.add_argument("--folder", type=Path, default=BENCH_DIR / "scenes", help="scene and outputs folder")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results_scale.json", help="results file")
    parser.add_argument("--predict-child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    folder = args.folder / f"s2_tile_{args.size}"
    workdir = folder / "work"
    if args.predict_child:
        predict_and_paint(args.predict_child, workdir, args.tile_size, args.workers)
        return 0

    print(f"building a {args.size} x {args.size} px scene in {folder} ...", flush=True)
    start = time.perf_counter()
    config = build_big_scene(folder, args.size, args.tile_size)
    results = {"scene_px": [args.size, args.size], "megapixels": round(args.size**2 / 1e6, 1),
               "tile_size": args.tile_size, "workers": args.workers, "build_s": round(time.perf_counter() - start, 1)}
    print("Step 0, tiled, on a LocalCluster ...", flush=True)
    results["step0"] = run_measured([sys.executable, str(BENCH_DIR.parent / "Step0_Data_Preparation.py"), "--config",
                                     str(config), "--workdir", str(workdir), "--n-segments", str(args.n_segments),
                                     "--tile-size", str(args.tile_size), "--workers", str(args.workers)])
    record = json.loads((workdir / "run.json").read_text())["steps"]["Step0_Data_Preparation"]
    print("Step 2 prediction and painting, tiled, on a LocalCluster ...", flush=True)
    results["step2_predict"] = run_measured([sys.executable, __file__, "--predict-child", str(config), "--size",
                                             str(args.size), "--tile-size", str(args.tile_size), "--workers",
                                             str(args.workers), "--folder", str(args.folder)])
    results["step2_predict"].update(json.loads(results["step2_predict"]["log_tail"].strip().splitlines()[-1]))
    results["step0"].update(superpixels=record["superpixels"], parts_s=record["timings_s"])
    megapixels = results["megapixels"]
    for part in ("step0", "step2_predict"):
        results[part]["s_per_megapixel"] = round(results[part]["wall_s"] / megapixels, 2)
        del results[part]["log_tail"]
    print(f"scene {args.size} x {args.size} px ({megapixels} Mpx), tiles of {args.tile_size} px, {args.workers} workers")
    for part in ("step0", "step2_predict"):
        r = results[part]
        print(f"{part:<14} {r['wall_s']:>8} s  {r['s_per_megapixel']:>6} s/Mpx  peak {r['peak_rss_gib']} GiB "
              f"(whole process tree)")
    print(f"superpixels: {results['step0']['superpixels']}; prediction {results['step2_predict']['predict_s']} s, "
          f"painting {results['step2_predict']['paint_s']} s")
    args.output.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
