"""Tiled mode's parts on small synthetic arrays with known answers: windows, halos, the split across tiles and
the preparation of one tile."""
from __future__ import annotations

import numpy as np
import pytest

from builders import write_scene, write_tif
from gdal_tif2rgb import read_layout
from pipeline.core import grids
from pipeline.segmentation import superpixels
from pipeline.run.config import load_scene
from pipeline.inputs.reference import class_codes
from pipeline.inputs.sources import PreparedSources
from pipeline.core.vocabulary import TEST, TRAIN, UNLABELLED, UNUSED
from pipeline.segmentation.layers import stretched_layers
from pipeline.segmentation.sampling import extract_patches
from pipeline.segmentation.split import spatial_split, tiled_split
from pipeline.tiling.prepare_tiles import prepare_tile


def block_segments(rows: int, cols: int, side: int) -> np.ndarray:
    """Superpixels that are ``side`` x ``side`` squares, numbered row by row."""
    return (np.arange(rows)[:, None] // side) * (-(-cols // side)) + np.arange(cols)[None, :] // side


def brute_force_unused(segments, centroids, split_test, train, patch_width) -> set:
    """Train superpixels whose mirrored patch holds a pixel of a test superpixel, by looping (the slow way)."""
    rows, cols = segments.shape
    half = patch_width // 2
    mirror = lambda i, n: abs(i) if i < n else 2 * (n - 1) - i  # noqa: E731
    unused = set()
    for i in train:
        r, c = centroids[i]
        owners = {segments[mirror(r + dr, rows), mirror(c + dc, cols)] for dr in range(-half, half + 1)
                  for dc in range(-half, half + 1)}
        if any(split_test[o] for o in owners):
            unused.add(int(i))
    return unused


class TestWindows:
    def test_tiles_cover_the_scene_once(self):
        windows = grids.tile_windows((10, 7), 4)
        cover = np.zeros((10, 7), int)
        for row, col, rows, cols in windows:
            cover[row:row + rows, col:col + cols] += 1
        assert (cover == 1).all() and len(windows) == 6

    def test_halo_stops_at_the_scene_border(self):
        assert grids.with_halo((4, 4, 4, 3), 2, (10, 7)) == (2, 2, 8, 5)
        assert grids.with_halo((0, 0, 10, 7), 5, (10, 7)) == (0, 0, 10, 7)


class TestTiledSplit:
    @pytest.fixture
    def scene(self):
        segments = block_segments(16, 16, 4)  # 16 superpixels of 4 x 4 px; centroids at 2, 6, 10, 14
        labels = np.zeros(16, np.uint8)
        labels[15] = UNLABELLED
        return segments, superpixels.centroids(segments), labels

    def test_one_block_of_four_superpixels_is_held_out(self, scene):
        segments, centroids, labels = scene
        split = spatial_split(segments, centroids, labels, 7, 8, 0.2, np.random.default_rng(0))
        test = np.flatnonzero(split == TEST)
        assert len(test) == 4 and len({(r // 8, c // 8) for r, c in centroids[test]}) == 1
        assert split[15] == UNUSED  # unlabelled: never train, never test

    @pytest.mark.parametrize("patch_width, seed", [(3, 0), (7, 0), (7, 1), (9, 2), (11, 3)])
    def test_unused_are_exactly_the_train_patches_that_see_a_test_pixel(self, scene, patch_width, seed):
        segments, centroids, labels = scene
        split = spatial_split(segments, centroids, labels, patch_width, 8, 0.2, np.random.default_rng(seed))
        test = split == TEST
        labelled_train = np.flatnonzero((labels != UNLABELLED) & ~test)
        expected = brute_force_unused(segments, centroids, test, labelled_train, patch_width)
        assert set(np.flatnonzero((split == UNUSED) & (labels != UNLABELLED)).tolist()) == expected
        assert set(np.flatnonzero(split == TRAIN).tolist()) == set(labelled_train.tolist()) - expected

    def test_with_patch_width_3_nothing_next_to_a_block_is_lost(self, scene):
        segments, centroids, labels = scene  # a 3 px patch around (2, 2) stays inside its own 4 px square
        split = spatial_split(segments, centroids, labels, 3, 8, 0.2, np.random.default_rng(0))
        assert ((split == UNUSED) == (labels == UNLABELLED)).all()

    @pytest.mark.parametrize("tile_size", [5, 8, 16])
    def test_split_over_tiles_equals_the_whole_scene_split(self, scene, tile_size):
        segments, centroids, labels = scene
        whole = spatial_split(segments, centroids, labels, 7, 8, 0.3, np.random.default_rng(4))
        windows = grids.tile_windows(segments.shape, tile_size)
        read = lambda window: segments[window[0]:window[0] + window[2], window[1]:window[1] + window[3]]  # noqa
        tiled = tiled_split(read, windows, segments.shape, centroids, labels, 7, 8, 0.3,
                                  np.random.default_rng(4))
        assert np.array_equal(tiled, whole)


class TestTilePreparation:
    @pytest.fixture
    def scene(self, tmp_path):
        """A 48 x 40 px, 10-band image whose left half is bright and right half dark, and its reference: the scene,
        its inputs on the work grid (its own) and the reference values."""
        rng = np.random.default_rng(0)
        image = rng.integers(900, 1100, size=(10, 48, 40)).astype(np.uint16)
        image[:, :, 20:] //= 4
        reference = np.full((48, 40), 3, np.uint8)
        reference[:, 20:] = 4
        reference[:5, :5] = 0  # unlabelled corner
        config = write_scene(tmp_path / "scene.toml", write_tif(tmp_path / "image.tif", image),
                             write_tif(tmp_path / "reference.tif", reference), {"n_segments": 24, "patch_width": 19})
        scene = load_scene(config)
        prepared = PreparedSources(image=scene.image, bands=scene.bands, grid=read_layout(scene.image)[0],
                                   unit="raster values (UInt16)",
                                   reference_codes=class_codes(reference, scene.classes), sources={})
        return scene, prepared, reference

    def whole_layers(self, prepared):
        raw, valid = prepared.read_image()
        return stretched_layers(raw, valid, ["red", "green", "blue"])

    def test_tile_with_halo_gives_the_whole_scene_layers_and_patches(self, scene):
        scene, prepared, reference = scene
        whole = self.whole_layers(prepared)
        window = (24, 20, 24, 20)  # bottom-right tile of 2 x 2
        tile = prepare_tile(scene, prepared, whole.limits, window, (48, 40), prepared.reference_codes[24:, 20:])
        layers = whole.steps  # a tile's layers and patches come as stored: uint8 steps
        assert np.array_equal(tile["layers"], layers[24:, 20:])
        assert tile["segments"].shape == (24, 20) and tile["segments"].min() == 0
        n = tile["segments"].max() + 1
        assert len(tile["labels"]) == len(tile["centroids"]) == len(tile["samples"]) == n
        assert (tile["centroids"] >= [24, 20]).all() and (tile["centroids"] < [48, 40]).all()
        expected = extract_patches(layers, tile["centroids"], 19)
        assert np.array_equal(tile["samples"], expected)  # the halo lets patches see across the tile's edge
        assert (tile["labels"] == 3).all()  # reference value 4 is the fourth class, water
        assert tile["invalid"] == 0

    def test_tile_labels_and_codes_come_from_its_own_window(self, scene):
        scene, prepared, reference = scene
        limits = self.whole_layers(prepared).limits
        tile = prepare_tile(scene, prepared, limits, (0, 0, 24, 20), (48, 40), prepared.reference_codes[:24, :20])
        expected_codes = np.where(reference[:24, :20] == 3, 0, UNLABELLED)
        assert np.array_equal(tile["codes"], expected_codes)
        assert (tile["labels"][tile["purity"] > 0.6] == 0).all()
