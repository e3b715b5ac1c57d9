"""Step 1, class balance (tutorial section 2.3): the same number of training patches per class.

Reads ``samples_labels.mat`` from Step 0 and draws ``per_class`` training superpixels of every class,
with a seed, from the train split only (``split == 0``, label not 255): test and unused superpixels never
enter the balanced set. A class with fewer training superpixels than asked is drawn with replacement
(the step says so); one with fewer than :data:`~pipeline.model.balancing.FEW_TRAINING_SUPERPIXELS` (30) distinct ones gets a warning naming
it (its samples repeat a few places), and one with fewer than ``min_training_superpixels`` (5) is an error.

Writes ``Samples_classBalanced_<per_class>.mat`` in the work folder:
``images`` (m x w x w x 8 float32), ``masks`` (m x w x w uint8), ``labels`` (m uint8), ``index``
(m int32, the superpixel of each sample, so it can be traced back to the map), ``class_names``, ``layer_names``.
"""
from __future__ import annotations

import logging

import numpy as np

from pipeline.handoffs import contract, memory, settings
from pipeline.model.balancing import FEW_TRAINING_SUPERPIXELS, balance_classes, class_counts, write_balanced_set
from pipeline.handoffs.provenance import STEP0_PARAMETERS
from pipeline.run import cli
from pipeline.run.config import Scene
from pipeline.run.outputs import open_outputs

log = logging.getLogger(__name__)

def balance(scene: Scene) -> None:
    """Step 1: draw the balanced set from Step 0's training superpixels and write it (with the run.json record)."""
    timings = {}
    path = contract.BALANCED.path(scene.workdir, per_class=scene.params.per_class)
    inputs = (scene.config_path, contract.SAMPLES.path(scene.workdir), contract.SEGMENTS.path(scene.workdir))
    with open_outputs(scene.workdir, (path.name, "run.json"), inputs) as out:
        scene = settings.with_step0_settings(scene)  # Step 0's flags carry over
        p = scene.params
        memory.check_balanced_set_fits(p.per_class, len(scene.classes), p.patch_width)
        with cli.timed("read samples_labels.mat", timings):
            step0, _ = contract.load_step0(scene, ["labels", "split"], with_segments=False)
        before = class_counts(contract.train_labels(step0["labels"], step0["split"]), scene.class_names)
        log.info("training superpixels before balancing: %s", before)
        with cli.timed("draw balanced set", timings):
            index, with_replacement = balance_classes(step0["labels"], step0["split"], scene.class_names,
                                                      p.per_class, np.random.default_rng(p.training_seed),
                                                      str(contract.SAMPLES.path(scene.workdir)),
                                                      p.min_training_superpixels)
        for name in with_replacement:
            if before[name] < FEW_TRAINING_SUPERPIXELS:
                log.warning("class '%s' has only %d distinct training superpixels (fewer than %d): its %d samples "
                            "repeat them; draw more or larger polygons of it", name, before[name],
                            FEW_TRAINING_SUPERPIXELS, p.per_class)
            else:
                log.warning("class '%s' has fewer than %d training superpixels: drawn with replacement", name,
                            p.per_class)
        log.info("after balancing: %s", class_counts(step0["labels"][index], scene.class_names))
        with cli.timed(f"gather the drawn patches, write {path.name}", timings):
            run = write_balanced_set(out.staging, scene, step0, index)
        cli.record_run(scene, out.path("run.json"), "Step1_Class_Balance", {
            "timings_s": timings, "drawn_with_replacement": with_replacement, "counts_before": before,
            "run": run})


def build_parser():
    """Step 1's command line: the common flags and its parameters."""
    return cli.build_parser(__doc__, ["per_class", "min_training_superpixels"], seed="training_seed",
                            earlier_names=STEP0_PARAMETERS)


def main(argv=None) -> int:
    """Step 1 from the command line (``--help`` lists the flags)."""
    return cli.run_step(build_parser(), argv, balance)


if __name__ == "__main__":
    cli.exit_process(main())
