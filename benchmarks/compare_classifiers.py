"""Map quality and cost of the classifiers on a scene already through Steps 0 and 1: the CNN with the tutorial's
channels and with every layer of the scene, each trained with several training seeds (the split and the balanced
set fixed), against the superpixel random forest (Step 3's baseline) and a pixel random forest.

Every figure is scored as Step 3 scores the map, on the held-out test blocks of Step 0's spatial split:

- pixel OA: the labelled reference pixels of the test superpixels, each given its superpixel's predicted class
  (Step 3's ``pixel_test``; the pixel forest classifies the pixels themselves);
- superpixel OA: the test superpixels against their majority reference label (``superpixel_test``).

The CNN's probabilities are weighted by the training superpixels' class shares, as Step 2 does with
``prior_correction``. Seconds are wall time on this machine (training only).

Run on a prepared work folder, e.g.::

    .venv/bin/python benchmarks/compare_classifiers.py --config data/aberystwyth.toml --workdir data/aberystwyth

Prints a Markdown table (mean and spread over the seeds) and writes ``compare_classifiers.json`` in the work folder.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pipeline.core.vocabulary import LAYER_NAMES, MASK_CHANNEL, TEST, TRAIN, UNLABELLED  # noqa: E402
from pipeline.handoffs import contract  # noqa: E402
from pipeline.model import cnn, forest  # noqa: E402
from pipeline.run.config import load_scene  # noqa: E402
from pipeline.workflow import forest_features, train  # noqa: E402

#: The CNN configurations compared, name -> (train_layers, random_patch_centres): the tutorial's 8 layers and the
#: mask, and every layer of the scene, with the patches on the superpixels' centroids (as the tutorial) or, for
#: training, around pixels drawn at random in them anew each epoch.
CONFIGURATIONS = {"tutorial": ((*LAYER_NAMES, MASK_CHANNEL), False), "all layers": (("all",), False),
                  "all layers + random centres": (("all",), True)}
#: Reference pixels the pixel random forest is trained on, drawn from the training superpixels.
PIXEL_FOREST_PIXELS = 50_000


class HeldOut:
    """The test superpixels of a work folder and their reference pixels by class, to score per-superpixel classes."""

    def __init__(self, segments: np.ndarray, codes: np.ndarray, labels: np.ndarray, split: np.ndarray, k: int):
        n = len(labels)
        scored = (segments >= 0) & (codes < k)
        self.by_class = np.bincount(segments[scored].astype(np.int64) * k + codes[scored],
                                    minlength=n * k).reshape(n, k)
        self.test = np.flatnonzero((split == TEST) & (labels != UNLABELLED))
        self.labels = labels

    def scores(self, predicted: np.ndarray) -> dict:
        """Pixel and superpixel OA of the classes ``predicted`` (one per test superpixel)."""
        pixels = self.by_class[self.test]
        return {"pixel": float(pixels[np.arange(len(pixels)), predicted].sum() / pixels.sum()),
                "superpixel": float(np.mean(predicted == self.labels[self.test]))}


def image_bands(scene, step0_record: dict) -> np.ndarray:
    """Every band of the image Step 0 prepared, then NDVI, NDWI and NDBI, float32 (rows, cols, bands + 3): what
    Step 3's random forest reads (``forest_features.image_reader``), whole."""
    return forest_features.image_reader(forest_features.prepared_image(scene, step0_record))(None)


def forests(bands: np.ndarray, segments: np.ndarray, codes: np.ndarray, held: HeldOut, trained: np.ndarray,
            split: np.ndarray, seeds, k: int) -> dict:
    """Scores of the superpixel random forest (Step 3's baseline) and of a pixel random forest for each seed."""
    from sklearn.ensemble import RandomForestClassifier

    features, _ = forest.superpixel_features([(bands, segments)], len(held.labels))
    in_training = np.zeros(len(held.labels) + 1, bool)
    in_training[np.flatnonzero(split == TRAIN) + 1] = True
    candidates = np.flatnonzero(in_training[segments.ravel() + 1] & (codes.ravel() < k))
    test_pixels = np.isin(segments.ravel(), held.test) & (codes.ravel() < k)
    flat = bands.reshape(-1, bands.shape[-1])
    result = {"superpixel forest": [], "pixel forest": []}
    for seed in seeds:
        start = time.perf_counter()
        predicted = forest.predictions(features, trained, held.labels[trained], seed)
        result["superpixel forest"].append({**held.scores(predicted[held.test]),
                                            "seconds": time.perf_counter() - start})
        rng = np.random.default_rng(seed)
        chosen = rng.choice(candidates, size=min(PIXEL_FOREST_PIXELS, len(candidates)), replace=False)
        start = time.perf_counter()
        pixel_forest = RandomForestClassifier(n_estimators=300, random_state=seed, n_jobs=-1)
        pixel_forest.fit(flat[chosen], codes.ravel()[chosen])
        pixel_classes = pixel_forest.predict(flat[test_pixels])
        result["pixel forest"].append({"pixel": float(np.mean(pixel_classes == codes.ravel()[test_pixels])),
                                       "superpixel": None, "seconds": time.perf_counter() - start})
    return result


def cnns(scene, workdir: Path, held: HeldOut, split: np.ndarray, segments: np.ndarray, seeds, configurations,
         ensemble_size: int | None = None) -> dict:
    """Scores and training seconds of the CNN in each configuration and with each training seed (``split``: Step
    0's split code of each superpixel; the training superpixels' class shares weight the probabilities), and of
    the ensembles of ``ensemble_size`` (default: all) consecutive seeds' CNNs."""
    step0 = contract.load(contract.SAMPLES, workdir, ["samples", "masks", "layer_names", contract.PROVENANCE])
    record = contract.provenance_of(step0, contract.SAMPLES.path(workdir), contract.SAMPLES.made_by)
    layer_names = tuple(step0["layer_names"])
    balanced = contract.load(contract.BALANCED, workdir, ["index", "labels"], per_class=scene.params.per_class)
    shares = np.bincount(contract.train_labels(held.labels, split), minlength=len(scene.classes))
    shares = shares / shares.sum()
    result = {}
    for name in configurations:
        train_layers, random_centres = CONFIGURATIONS[name]
        channels = cnn.network_channels(train_layers, layer_names, "compare_classifiers")
        network_input = cnn.model_inputs(step0["samples"][balanced["index"]], step0["masks"][balanced["index"]],
                                         channels, layer_names)
        test_input = cnn.model_inputs(step0["samples"][held.test], step0["masks"][held.test], channels, layer_names)
        patches_of = train.patches_anywhere(workdir, record, segments, balanced["index"], scene.params.patch_width,
                                            channels) if random_centres else None
        result[f"CNN, {name}"] = runs = []
        members = []
        for seed in seeds:
            params = dataclasses.replace(scene.params, training_seed=seed)
            start = time.perf_counter()
            model, history = cnn.train_model(network_input, balanced["labels"], balanced["index"],
                                             len(scene.classes), params, Path(tempfile.mkdtemp()),
                                             patches_of=patches_of)
            seconds = time.perf_counter() - start
            members.append(model.predict(test_input, batch_size=512, verbose=0))
            probabilities = cnn.correct_priors(members[-1], shares)
            runs.append({**held.scores(probabilities.argmax(axis=1)), "seconds": seconds,
                         "seconds_per_epoch": seconds / len(history["loss"]), "channels": len(channels)})
            print(name, seed, runs[-1], flush=True)
        size = ensemble_size or len(seeds)  # consecutive seeds, as ensemble = size maps with the first
        result[f"CNN, {name}, ensembles of {size}"] = [{
            **held.scores(cnn.correct_priors(np.mean(members[i:i + size], axis=0), shares).argmax(axis=1)),
            "seconds": sum(run["seconds"] for run in runs[i:i + size])} for i in range(0, len(seeds) - size + 1, size)]
    return result


def summary(results: dict) -> str:
    """A Markdown table: mean +/- spread (half the range) over the seeds of each classifier's scores and time."""
    def cell(runs, key, scale=100.0, digits=1):
        values = [run[key] for run in runs if run.get(key) is not None]
        if not values:
            return "-"
        mean, half = np.mean(values) * scale, (max(values) - min(values)) / 2 * scale
        return f"{mean:.{digits}f} ± {half:.{digits}f}"

    lines = ["| classifier | pixel OA (%) | superpixel OA (%) | training s |", "|---|---|---|---|"]
    for name, runs in results.items():
        lines.append(f"| {name} | {cell(runs, 'pixel')} | {cell(runs, 'superpixel')} | "
                     f"{cell(runs, 'seconds', 1.0, 0)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="the scene's TOML")
    parser.add_argument("--workdir", type=Path, required=True, help="its work folder, through Steps 0 and 1")
    parser.add_argument("--seeds", default="1,2,3", help="training seeds, comma-separated (default 1,2,3)")
    parser.add_argument("--ensemble", type=int, default=None,
                        help="score ensembles of this many consecutive seeds' CNNs (default: one of all seeds)")
    parser.add_argument("--configurations", default=",".join(CONFIGURATIONS),
                        help=f"CNN configurations, comma-separated, of: {', '.join(CONFIGURATIONS)}")
    args = parser.parse_args(argv)
    configurations = [name.strip() for name in args.configurations.split(",") if name.strip()]
    unknown = sorted(set(configurations) - set(CONFIGURATIONS))
    if unknown:
        parser.error(f"--configurations: unknown {', '.join(unknown)}; choose from {', '.join(CONFIGURATIONS)}")
    scene = load_scene(args.config, args.workdir)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    samples, segments = contract.load_step0(scene, ["labels", "split"])  # checked to belong to the scene
    record = samples[contract.PROVENANCE]
    codes = contract.read_raster(contract.REFERENCE, args.workdir, record)
    k = len(scene.classes)
    held = HeldOut(segments, codes, samples["labels"], samples["split"], k)
    trained = np.unique(contract.load(contract.BALANCED, args.workdir, ["index"],
                                      per_class=scene.params.per_class)["index"])
    results = forests(image_bands(scene, record), segments, codes, held, trained, samples["split"], seeds, k)
    results.update(cnns(scene, args.workdir, held, samples["split"], segments, seeds, configurations, args.ensemble))
    ceiling = held.scores(held.by_class[held.test].argmax(axis=1))["pixel"]
    (args.workdir / "compare_classifiers.json").write_text(json.dumps(
        {"scene": scene.name, "seeds": seeds, "segmentation_ceiling_pixel": ceiling, "results": results}, indent=1))
    print(f"{scene.name}: {len(held.test)} test superpixels; segmentation ceiling (pixel OA) {100 * ceiling:.1f} %")
    print(summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
