"""Prediction on a Dask cluster for tiled runs: each task reads its rows of ``samples_labels.mat`` (MATLAB 7.3,
read at those rows only) and classifies them with the model, loaded once per worker process."""
from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import numpy as np

from pipeline.tiling import cluster
from pipeline.handoffs import contract
from pipeline.model.cnn import PREDICT_CHUNK, load_model, model_inputs

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _worker_model(path: str, modified: float):
    """The model saved at ``path``, loaded once per Dask worker process (one TensorFlow thread per worker);
    ``modified`` (the file's time, s) makes a model saved again at the same path load anew."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    return load_model(Path(path))


def predict_rows(model_path: Path, samples_path: Path, start: int, stop: int, channels, layer_names) -> np.ndarray:
    """Class probabilities (stop - start, classes) of superpixels ``start:stop``, whose patches (of the layers
    ``layer_names``) and masks are read from the ``samples_labels.mat`` at ``samples_path``; the model sees the
    ``channels`` it was trained on."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    model = _worker_model(str(model_path), os.path.getmtime(model_path))
    rows = contract.load_rows(contract.SAMPLES, samples_path.parent, ["samples", "masks"], slice(start, stop))
    return model.predict(model_inputs(rows["samples"], rows["masks"], channels, layer_names), batch_size=512, verbose=0)


def predict_on_cluster(workdir: Path, model_path: Path, client, n: int, channels, layer_names) -> np.ndarray:
    """Probabilities (n, classes) float32 of all ``n`` superpixels of the Step 0 run in ``workdir``, by the model
    saved at ``model_path``, in chunks of ``PREDICT_CHUNK`` superpixels on the Dask ``client``'s cluster."""
    chunks = [(model_path, contract.SAMPLES.path(workdir), start, min(start + PREDICT_CHUNK, n), channels,
               layer_names)
              for start in range(0, n, PREDICT_CHUNK)]
    parts = []
    for part in cluster.map_in_order(client, predict_rows, chunks):
        parts.append(part)
        log.info("  predicted %d / %d superpixels", sum(len(x) for x in parts), n)
    return np.concatenate(parts).astype(np.float32)
