"""Step 2, model training and prediction (tutorial sections 3 and 4): the patch CNN and the land-cover map.

Trains the tutorial's CNN on the balanced set of Step 1, logs it to TensorBoard (scalars, graph, weight
histograms, and projector embeddings of the network input and of the learned features), then classifies every
superpixel's patch and paints the map with one lookup, ``predLabels[segments]``. With ``--model`` it applies a
model trained on another scene instead (no Step 1, no training), checked against this scene with its card, and
compares the scene with the model's training scene (``pipeline/model/scene_shift.py``): its layers' quantiles, the
predicted class shares; it warns when the scene looks unlike it (``applied_model`` in the record of
``predLabels.mat``, ``comparison_with_training_scene`` in ``run.json``).

Reads the balanced set Step 1 made last, ``Samples_classBalanced_<per_class>.mat`` (or the one of ``--per-class``;
the log and ``run.json`` name it), or with ``--model MODEL`` the trained ``MODEL``
(a ``model.keras`` or ``model.forest.joblib``) and its card ``model.json`` beside it; ``samples_labels.mat`` and ``segments.mat`` (Step 0)
and the grid of ``layers.tif`` (tiled: ``segments.tif``, window by window, instead of the segments of
``segments.mat``). Writes, in the work folder: ``model.keras`` and its card ``model.json`` and
``learning_curve.png`` (not with ``--model``), ``predLabels.mat`` (``predLabels``: n uint8, 255 for
superpixels without valid pixels), ``predProb.mat`` (``predProb``: n x classes float32), ``predMap.mat``
(``predMap``: rows x cols uint8; not in tiled mode), ``predMap.png``, ``predMap.tif`` (a Cloud-Optimized
GeoTIFF of class codes with a colour table and class names, nodata 255), ``predMap.qml`` (its QGIS style),
``uncertainty.tif`` (float32, 1 - max class probability, NaN where no data) and ``uncertainty.png``; both
GeoTIFFs carry this run's id (``STEP2_RUN``). With ``--tile-size`` (as in Step 0), prediction runs chunk by
chunk on a Dask cluster and the map is painted window by window. The TensorBoard run goes to
``runs/<name>-<timestamp>/`` (with a copy of the model and its card): ``tensorboard --logdir runs``.

With ``--classifier forest`` it trains a random forest instead (300 trees, ``training_seed``) on each distinct
training superpixel of the balanced set, its features each superpixel's mean and standard deviation of every band
of the image Step 0 prepared and of NDVI, NDWI and NDBI (Step 3's baseline), and maps with its class
probabilities, not reweighted (they carry the training superpixels' class shares already): ``model.forest.joblib``
and its card instead of ``model.keras``, no learning curve and no TensorBoard run. The work is done in
``pipeline/workflow/train.py``.
"""
from __future__ import annotations

import os
from pathlib import Path

from pipeline.handoffs.provenance import STEP0_PARAMETERS
from pipeline.run import cli
from pipeline.run.config import RUNS_DIR, Scene
from pipeline.workflow import train


def map_land_cover(scene: Scene, runs_dir: Path = RUNS_DIR, scheduler: str | None = None,
                   workers: int | None = None, model: Path | None = None) -> None:
    """Step 2: train the scene's classifier (the CNN, its TensorBoard run in ``runs_dir``, or the random forest) on
    Step 1's balanced set (section 3), then classify every superpixel with it and paint the map (section 4); with
    ``model`` (a trained ``model.keras`` or ``model.forest.joblib``), map with that model instead (no Step 1, no training). Tiled scenes are classified on a Dask cluster
    (``scheduler``, else a LocalCluster of ``workers`` processes)."""
    if model is None:
        train.train_and_map(scene, runs_dir, scheduler, workers)
    else:
        train.map_with_model(scene, model, scheduler, workers)


def build_parser():
    """Step 2's flags: the common ones, its parameters, the cluster, the TensorBoard folder and ``--model``."""
    parser = cli.build_parser(__doc__, ["per_class", "epochs", "ensemble", "batch_size", "validation_fraction",
                                        "train_layers", "projector_layers", "augment", "random_patch_centres",
                                        "prior_correction",
                                        "classifier", "tile_size"],
                             seed="training_seed", earlier_names=STEP0_PARAMETERS)
    cli.add_cluster_flags(parser)
    parser.add_argument("--runs-dir", type=Path, default=RUNS_DIR,
                        help="folder of TensorBoard runs (default: runs/ in the project)")
    parser.add_argument("--model", type=Path, default=None, metavar="MODEL",
                        help="apply this trained model.keras or model.forest.joblib (with its model.json beside it) "
                             "instead of training: "
                             "Steps 1 and training are skipped (default: train on this scene)")
    return parser


def main(argv=None) -> int:
    """Step 2 from the command line (``--help`` lists the flags)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of the log
    with cli.native_stderr_silenced():
        return cli.run_step(build_parser(), argv, map_land_cover, "runs_dir", "scheduler", "workers", "model")


if __name__ == "__main__":
    cli.exit_process(main())
