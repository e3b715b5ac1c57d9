"""Step 3, accuracy assessment (tutorial section 5), made honest.

The tutorial scores every superpixel, including the ones the CNN was trained on. Here every figure comes from the
**held-out test blocks** of Step 0's spatial split (superpixels with ``split == 1``, label not 255); the
tutorial's all-superpixel figures are kept for comparison. Assessments (superpixel-level and pixel-level; rows
of every confusion matrix = reference, columns = prediction; see ``pipeline/assessment/accuracy.py``):

- ``superpixel_test``: predicted vs majority reference label of the test superpixels (superpixel-level);
- ``superpixel_all_labelled``: the same over every labelled superpixel, training ones included (tutorial);
- ``pixel_test``: the predicted map vs the reference raster on the labelled pixels of the test superpixels;
- ``segmentation_ceiling``: the map in which every superpixel carries its reference majority label, vs the
  reference raster on the same pixels: the best any superpixel classifier could do on this segmentation;
- ``random_forest_superpixel_test``, ``random_forest_pixel_test``: the strongest simple peer, a random forest on
  each superpixel's mean and standard deviation of every band of the image and of NDVI, NDWI and NDBI, trained on
  the superpixels of the CNN's balanced set and scored like ``superpixel_test`` and ``pixel_test``; with
  ``cnn_minus_forest``, the CNN's lead over it and its 95 % interval over the test blocks, and whether it beats it.

Besides, ``area_estimates`` (the headline): the area of every class in hectares and the pixel-level, area-weighted
user's, producer's and overall accuracy, each with a 95 % confidence interval, from each test pixel's own
reference value, with the test blocks as the sampling units of a cluster sample
(``pipeline/assessment/area_estimates.py``); ``area_estimates.sample`` says what the sample is. A reference that labels only part of the map (training
polygons) is no probability sample of it: then no areas or accuracies are estimated from it.

Reads, from Steps 0-2: ``samples_labels.mat`` (labels, split, centroids), ``layers.tif``, ``segments.tif``, the
image Step 0 prepared (named in ``run.json``, for the random forest),
``reference.tif`` (if the scene has a reference), ``predLabels.mat``, ``predMap.tif``, ``uncertainty.tif`` (for
``--suggest``) and, for a model trained here, ``Samples_classBalanced_<per_class>.mat``. The map assessed is Step
2's ``predMap.tif``, as written; the rasters are read window by window (``WINDOW`` in
``pipeline/workflow/assess.py``) and pixel counts summed over the windows (``pipeline/assessment/pixel_counts.py``),
so Step 3's memory is bounded by a window, not by the scene; the figures are drawn from previews (every
``display_stride``-th row and column) gathered on the way. Two modes depart from the above:

- a model applied from another scene (Step 2 ``--model``) was trained on none of this scene's superpixels:
  every labelled superpixel is held out, and there is no random forest baseline (it would need this scene's
  balanced set); ``metrics.json``'s ``applied_model`` carries Step 2's comparison of the scene with the model's
  training scene (``pipeline/model/scene_shift.py``; ``shift_warning``: whether it looks unlike it; null for a map
  made before the comparison was), and the report shows it, as a warning if it looks unlike;
- a scene without a reference: no accuracy can be assessed; ``metrics.json`` holds the map's class areas in
  hectares and ``report.html`` shows the map, its uncertainty and those areas.

Writes ``metrics.json`` (sorted keys; per assessment: ``confusion_matrix``, ``class_names``,
``overall_accuracy``, ``kappa``, ``precision``, ``recall``, ``f1``, ``support``, ``weighted_f1``,
``n_samples``, ``unit``; then ``area_estimates``; ``cnn_minus_forest`` (``pixel_test`` and ``superpixel_test``:
``overall_accuracy`` [CNN, forest], ``difference``, ``difference_se``, ``difference_ci95``, ``n_units`` test blocks;
``verdict``); ``absent_classes``: the classes the reference holds that the
map never gives (``map``) or that no test superpixel carries (``test_set``), which the report points out;
undefined values are null), ``reference_maps.png`` (pixel and superpixel reference beside the prediction),
``disagreement_map.png``, ``split_map.png``, ``confusion_<assessment>.png``, ``report.html`` (one self-contained
file with every image inside it) and the run's record in ``run.json``.

A validation sample, as README "Reporting areas and accuracy" tells (``pipeline/assessment/validation_sample.py``):

- ``--design-sample`` writes ``validation_sample.gpkg`` and ``.csv``, a stratified random sample of the map to
  label (``--target-se``, ``--min-per-class``, ``--sample-size``, ``--seed``), and stops;
- ``--validation POINTS`` (or ``validation`` under ``[assessment]``) adds ``validation_sample`` to
  ``metrics.json`` and the report: the areas and accuracies estimated from the labelled points;
- ``--suggest N`` writes ``suggested_samples.gpkg`` and ``.csv``, the N most uncertain superpixels spread over
  the scene, to label for training, and stops.

The work is done in ``pipeline/workflow/assess.py``.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.handoffs import settings
from pipeline.handoffs.provenance import STEP0_PARAMETERS
from pipeline.run import cli
from pipeline.run.config import Scene
from pipeline.run.outputs import open_outputs
from pipeline.workflow import assess


def assess_accuracy(scene: Scene, design_sample: bool = False, suggest: int | None = None) -> None:
    """Step 3: every assessment of the map on the held-out superpixels, the figures, ``metrics.json`` and
    ``report.html``, committed as one set (for a scene without a reference: the map's class areas and a report of
    the map and its uncertainty). With ``design_sample`` or ``suggest`` (a number of points), only that sample."""
    scene = settings.for_assessment(scene)  # the flags of Steps 0-2 carry over
    if design_sample:
        return assess.design_sample(scene)
    if suggest is not None:
        return assess.suggest_samples(scene, suggest)
    timings = {}
    with open_outputs(scene.workdir, assess.OUTPUTS, assess.hand_off_paths(scene)) as out:
        with cli.timed("read Step 0, 1 and 2 outputs", timings):
            hand_offs = assess.read_hand_offs(scene)
            validation = assess.validation_points(scene, hand_offs)  # a bad file fails before any long work
        if hand_offs.has_reference:  # 5. the map against the reference, on the held-out test blocks
            results = assess.assess_map(scene, out, hand_offs, timings, validation)
        else:  # no reference: the map's class areas only
            results = assess.describe_map(scene, out, hand_offs, validation)
        cli.record_run(scene, out.path("run.json"), "Step3_Accuracy_Assessment", {"timings_s": timings, **results})


def build_parser():
    """Step 3's flags: the common ones, its parameters, the two sample modes and the validation sample."""
    parser = cli.build_parser(__doc__, ["per_class", "target_se", "min_per_class", "sample_size"],
                             seed="sample_seed", earlier_names=STEP0_PARAMETERS)
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--design-sample", action="store_true",
                       help="write validation_sample.gpkg/.csv, a stratified random sample of the map to label, "
                            "and stop")
    modes.add_argument("--suggest", type=cli.positive_int, metavar="N", default=None,
                       help="write suggested_samples.gpkg/.csv, N points at the most uncertain superpixels to "
                            "label for training, and stop")
    parser.add_argument("--validation", type=Path, default=None, metavar="POINTS",
                        help="a labelled validation sample (GeoPackage or CSV from --design-sample) to estimate "
                             "areas and accuracy from (default: [assessment] validation in the TOML)")
    parser.add_argument("--validation-field", default=None, metavar="FIELD",
                        help="its field holding class names or [classes] values (default: reference)")
    return parser


def main(argv=None) -> int:
    """Step 3 from the command line (``--help`` lists the flags)."""
    return cli.run_step(build_parser(), argv, assess_accuracy, "design_sample", "suggest")


if __name__ == "__main__":
    cli.exit_process(main())
