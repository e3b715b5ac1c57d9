"""Random patch centres: each training patch is cut anew around a pixel drawn at random in its superpixel, as
Step 0 cuts its centroid patches, and the CNN trains on those patches rather than the stored ones."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline.core.errors import InputDataError
from pipeline.handoffs import contract
from pipeline.model import cnn
from pipeline.run.parameters import Parameters
from pipeline.segmentation.sampling import SuperpixelPixels
from pipeline.workflow.train import patch_cutter, patches_anywhere

SIDE, SQUARE, WIDTH = 60, 10, 5


@pytest.fixture()
def grid_scene():
    """Layers whose values are each pixel's row and column (uint8 steps), and 10 x 10 px square superpixels."""
    rows, cols = np.mgrid[:SIDE, :SIDE]
    layers = np.stack([rows, cols], axis=-1).astype(np.uint8)
    segments = (rows // SQUARE) * (SIDE // SQUARE) + cols // SQUARE
    return layers, segments.astype(np.int32)


def test_every_patch_is_cut_around_a_pixel_of_its_own_superpixel(grid_scene):
    layers, segments = grid_scene
    cut = patch_cutter(layers, segments, np.array([7, 7, 20]), WIDTH, ("row", "col", "mask"), ("row", "col"))
    ids = np.array([7] * 600 + [20] * 600)
    network_input = cut(ids, np.random.default_rng(0))
    assert network_input.shape == (1200, WIDTH, WIDTH, 3) and network_input.dtype == np.float32
    centre = np.rint(network_input[:, WIDTH // 2, WIDTH // 2, :2] * 255).astype(int)
    assert (segments[centre[:, 0], centre[:, 1]] == ids).all()
    for (row, col), patch, own in zip(centre, network_input, ids):  # cut by plain slicing, away from borders
        window = np.s_[row - 2:row + 3, col - 2:col + 3]
        np.testing.assert_array_equal(patch[..., :2], layers[window] / np.float32(255))
        np.testing.assert_array_equal(patch[..., 2], segments[window] == own)
    for own in (7, 20):  # every pixel of the superpixel gets drawn, not a few favourites
        drawn = {tuple(pixel) for pixel in centre[ids == own]}
        assert drawn == {tuple(pixel) for pixel in np.argwhere(segments == own)}


def test_the_same_generator_state_cuts_the_same_patches(grid_scene):
    layers, segments = grid_scene
    cut = patch_cutter(layers, segments, np.arange(36), WIDTH, ("row", "col", "mask"), ("row", "col"))
    ids = np.arange(36).repeat(3)
    first, again = cut(ids, np.random.default_rng(5)), cut(ids, np.random.default_rng(5))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, cut(ids, np.random.default_rng(6)))


def test_a_superpixel_without_pixels_is_refused():
    with pytest.raises(InputDataError, match="superpixel 3 has no pixel"):
        SuperpixelPixels(np.zeros((4, 4), np.int32), np.array([0, 3]))


def test_the_cnn_learns_from_the_cut_patches_not_the_stored_ones(tmp_path):
    """The stored patches are noise; the cut ones show the class (bright = 1, dark = 0): only a CNN trained on the
    cut patches tells them apart."""
    rng = np.random.default_rng(0)
    labels = np.tile([0, 1], 48).astype(np.uint8)
    index = np.arange(96)
    noise = rng.random((96, 19, 19, 1), dtype=np.float32)

    def cut(ids, generator):
        return np.broadcast_to((ids % 2).astype(np.float32)[:, None, None, None], (len(ids), 19, 19, 1)).copy() \
            + generator.random((len(ids), 19, 19, 1), dtype=np.float32) * 0.1

    params = dataclasses.replace(Parameters(), epochs=6, batch_size=16, validation_fraction=0.0)
    clear = cut(np.array([0, 1] * 10), np.random.default_rng(1))
    trained, _ = cnn.train_model(noise, labels, index, 2, params, tmp_path / "cut", patches_of=cut)
    assert (trained.predict(clear, verbose=0).argmax(axis=1) == [0, 1] * 10).all()


def test_a_patch_cut_at_the_centroid_is_the_one_step0_stored(step0_workdir, monkeypatch):
    step0 = contract.load(contract.SAMPLES, step0_workdir, ["samples", "masks", "centroids", "layer_names",
                                                            contract.PROVENANCE])
    record = contract.provenance_of(step0, contract.SAMPLES.path(step0_workdir), contract.SAMPLES.made_by)
    ids = np.arange(0, len(step0["centroids"]), 5)  # borders (mirrored) included
    channels = ("mask", *reversed(contract.layer_names_of_run(record)))  # any order of the channels
    cut = patches_anywhere(step0_workdir, record, None, ids, record["parameters"]["patch_width"], channels)
    monkeypatch.setattr(SuperpixelPixels, "random_pixels", lambda self, chosen, rng: step0["centroids"][chosen])
    np.testing.assert_array_equal(cut(ids, np.random.default_rng(0)),
                                  cnn.model_inputs(step0["samples"][ids], step0["masks"][ids], channels,
                                                   tuple(step0["layer_names"])))
