"""Step 1, class balance (tutorial section 2.3): the same number of training patches per class.

Reads ``samples_labels.mat`` from Step 0 and draws ``per_class`` training superpixels of every class,
with a seed, from the train split only (``split == 0``, label not 255): test and unused superpixels never
enter the balanced set. A class with fewer training superpixels than asked is drawn with replacement
(the step says so); a class with none is an error.

Writes ``Samples_classBalanced_<per_class>.mat`` in the work folder:
``images`` (m x w x w x 8 float32), ``masks`` (m x w x w uint8), ``labels`` (m uint8), ``index``
(m int32, the superpixel of each sample, so it can be traced back to the map), ``class_names``, ``layer_names``.
"""
from __future__ import annotations

import logging
import sys

import numpy as np

import gdal_tif2rgb as io
import pipeline
from pipeline import timed
from Step0_Data_Preparation import STEP0, TRAIN, load_outputs

log = logging.getLogger(__name__)


def balanced_set_path(scene: pipeline.Scene):
    """Where Step 1 writes, and Step 2 reads, the balanced set for the scene's ``per_class``."""
    return scene.output(f"Samples_classBalanced_{scene.params['per_class']}.mat")


def balance_classes(labels: np.ndarray, split: np.ndarray, class_names, per_class: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """Superpixel indices of ``per_class`` train samples of every class, in class order.

    Returns the indices (int32, ``per_class * n_classes``) and the names of the classes that had to be
    drawn with replacement. Raises :class:`gdal_tif2rgb.InputDataError` naming a class without samples.
    """
    eligible = (split == TRAIN) & (labels != io.UNLABELLED)
    chosen, with_replacement = [], []
    for code, name in enumerate(class_names):
        members = np.flatnonzero(eligible & (labels == code))
        if members.size == 0:
            raise io.InputDataError(f"class '{name}' has no training superpixel; check the reference, "
                                    f"[classes] or a smaller block_size/test_fraction in Step 0")
        replace = members.size < per_class
        if replace:
            with_replacement.append(name)
        chosen.append(rng.choice(members, size=per_class, replace=replace))
    return np.concatenate(chosen).astype(np.int32), with_replacement


def class_counts(labels: np.ndarray, class_names) -> dict:
    """Number of samples of each class name."""
    return {name: int((labels == code).sum()) for code, name in enumerate(class_names)}


def balance(args) -> None:
    """Run Step 1 with parsed arguments."""
    scene = pipeline.scene_from_args(args)
    timings = {}
    with timed("read samples_labels.mat", timings):
        data, _ = load_outputs(scene, ["labels", "split", "class_names", "layer_names"])
    class_names = list(data["class_names"])
    if class_names != scene.class_names:
        raise io.InputDataError(f"{scene.output('samples_labels.mat')}: made for classes {class_names}, "
                                f"not {scene.class_names}; rerun {STEP0}")
    train = (data["split"] == TRAIN) & (data["labels"] != io.UNLABELLED)
    log.info("training superpixels before balancing: %s", class_counts(data["labels"][train], class_names))
    with timed("draw balanced set", timings):
        index, with_replacement = balance_classes(data["labels"], data["split"], class_names,
                                                  scene.params["per_class"], np.random.default_rng(scene.params["seed"]))
    for name in with_replacement:
        log.warning("class '%s' has fewer than %d training superpixels: drawn with replacement", name,
                    scene.params["per_class"])
    labels = data["labels"][index]
    log.info("after balancing: %s", class_counts(labels, class_names))
    path = balanced_set_path(scene)
    with timed(f"gather the drawn patches, write {path.name}", timings):
        rows = io.load_mat_rows(scene.output("samples_labels.mat"), ["samples", "masks"], index, made_by=STEP0)
        io.save_mat(path, {"images": rows["samples"], "masks": rows["masks"], "labels": labels, "index": index,
                           "class_names": np.array(class_names), "layer_names": np.array(data["layer_names"])})
    pipeline.record_run(scene, "Step1_Class_Balance", {"timings_s": timings, "drawn_with_replacement": with_replacement,
                                                       "counts_before": class_counts(data["labels"][train], class_names)})


def build_parser():
    return pipeline.build_parser(__doc__, ["per_class"])


def main(argv=None) -> int:
    return pipeline.run_step(balance, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
