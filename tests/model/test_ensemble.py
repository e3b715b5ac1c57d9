"""An ensemble of CNNs maps with the mean of its members' class probabilities, as one Keras model that saves,
loads and predicts like a single CNN."""
from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.model import cnn
from pipeline.run.parameters import Parameters


def test_the_ensemble_predicts_the_mean_of_its_members(tmp_path):
    rng = np.random.default_rng(0)
    network_input = rng.random((64, 19, 19, 3), dtype=np.float32)
    labels = rng.integers(0, 2, size=64).astype(np.uint8)
    params = dataclasses.replace(Parameters(), epochs=1, batch_size=16, ensemble=3, training_seed=2**32 - 2)
    model, members, history = cnn.train_ensemble(network_input, labels, np.arange(64), 2, params, tmp_path)
    assert len(members) == 3 and sorted(p.name for p in tmp_path.iterdir()) == ["member_1", "member_2", "member_3"]
    probabilities = model.predict(network_input, verbose=0)
    each = [member.predict(network_input, verbose=0) for member in members]
    np.testing.assert_allclose(probabilities, np.mean(each, axis=0), atol=1e-6)
    assert not np.allclose(each[0], each[1])  # the members' seeds differ (the last wraps around to 0)
    assert set(history) >= {"loss", "val_loss"} and len(history["loss"]) == 1
    model.save(tmp_path / "ensemble.keras")
    np.testing.assert_allclose(cnn.load_model(tmp_path / "ensemble.keras").predict(network_input, verbose=0),
                               probabilities, atol=1e-6)


def test_one_member_is_the_single_cnn(tmp_path):
    rng = np.random.default_rng(1)
    network_input = rng.random((32, 19, 19, 2), dtype=np.float32)
    labels = rng.integers(0, 2, size=32).astype(np.uint8)
    params = dataclasses.replace(Parameters(), epochs=1, batch_size=16)
    model, members, _ = cnn.train_ensemble(network_input, labels, np.arange(32), 2, params, tmp_path)
    assert members == [model] and model.name == "tutorial_cnn"
