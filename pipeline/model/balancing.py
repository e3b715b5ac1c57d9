"""Tutorial section 2.3 on arrays: the balanced training set, the same number of training superpixels of every
class drawn from the train split, and the balanced-set hand-off written with its provenance."""
from __future__ import annotations

import time

import numpy as np

from pipeline.core.errors import InputDataError
from pipeline.core.vocabulary import STEP0, STEP1, TRAIN, UNLABELLED
from pipeline.handoffs import contract, provenance

#: A class with fewer distinct training superpixels than this gets a warning: its samples repeat a few places.
FEW_TRAINING_SUPERPIXELS = 30


def balance_classes(labels: np.ndarray, split: np.ndarray, class_names, per_class: int,
                    rng: np.random.Generator, source: str = contract.SAMPLES.filename,
                    floor: int = 5) -> tuple[np.ndarray, list[str]]:
    """Superpixel indices of ``per_class`` train samples of every class, in class order.

    Returns the indices (int32, ``per_class * n_classes``) and the names of the classes that had to be
    drawn with replacement. Raises :class:`~pipeline.core.errors.InputDataError` naming ``source`` (the file the
    labels come from) and the first class with fewer than ``floor`` distinct training superpixels.
    """
    eligible = (split == TRAIN) & (labels != UNLABELLED)
    chosen, with_replacement = [], []
    for code, name in enumerate(class_names):
        members = np.flatnonzero(eligible & (labels == code))
        if members.size < floor:
            found = f"only {members.size} distinct training superpixels" if members.size else "no training superpixel"
            raise InputDataError(f"{source}: class '{name}' has {found}, fewer than the {floor} Step 1 needs "
                                 f"(min_training_superpixels); draw more or larger polygons of it, or check the "
                                 f"reference, [classes] or a smaller block_size/test_fraction in {STEP0}")
        replace = members.size < per_class
        if replace:
            with_replacement.append(name)
        chosen.append(rng.choice(members, size=per_class, replace=replace))
    return np.concatenate(chosen).astype(np.int32), with_replacement


def class_counts(labels: np.ndarray, class_names) -> dict:
    """Number of samples of each class name."""
    return {name: int((labels == code).sum()) for code, name in enumerate(class_names)}


def write_balanced_set(folder, scene, step0: dict, index: np.ndarray) -> str:
    """Gather the patches and masks of the superpixels ``index`` (int32, m) of Step 0's run (``step0``: its
    labels and provenance) and write them with their labels as ``Samples_classBalanced_<per_class>.mat`` into
    ``folder``, with the provenance of a new Step 1 run on ``scene`` (``made``: its time, seconds since the epoch,
    so that Step 2 finds the set made last); returns that run's id."""
    p = scene.params
    names = provenance.BALANCE_PARAMETERS
    record = provenance.new_run(STEP1, scene, names, step0_run=step0[contract.PROVENANCE]["run"],
                                parameters={name: getattr(p, name) for name in names}, made=time.time())
    rows = contract.load_rows(contract.SAMPLES, scene.workdir, ["samples", "masks"], index)
    contract.save(contract.BALANCED, folder, {
        "images": rows["samples"], "masks": rows["masks"], "labels": step0["labels"][index], "index": index,
        "class_names": scene.class_names, "layer_names": step0["layer_names"], contract.PROVENANCE: record},
        per_class=p.per_class)
    return record["run"]
