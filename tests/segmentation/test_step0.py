"""Step 0: layers, stretch, superpixels, patches, majority labels, spatial split, georeferencing, errors."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.io
from osgeo import gdal

from builders import SUBSET
from pipeline.handoffs import contract
from pipeline.segmentation import sampling, superpixels
from pipeline.core.vocabulary import LAYER_NAMES
from pipeline.segmentation.layers import apply_stretch, build_layers, normalized_difference, slic_lab, stretch_limits
from pipeline.segmentation.sampling import class_counts, extract_patches, majority_labels
from pipeline.segmentation.split import spatial_split


class TestLayers:
    def test_indices_follow_the_tutorial_formulas(self):
        raw = {"blue": np.array([[10.0]]), "green": np.array([[30.0]]), "red": np.array([[20.0]]),
               "nir": np.array([[60.0]]), "swir": np.array([[40.0]])}
        layers = build_layers(raw, np.ones((1, 1), bool))
        ndvi, ndwi, ndbi = layers[0, 0, 5:]
        assert ndvi == pytest.approx((60 - 20) / (60 + 20))
        assert ndwi == pytest.approx((30 - 40) / (30 + 40))
        assert ndbi == pytest.approx((40 - 60) / (40 + 60))
        assert layers.dtype == np.float32 and layers.shape == (1, 1, 8)

    def test_zero_denominator_gives_zero_not_nan(self):
        result = normalized_difference(np.zeros((2, 2)), np.zeros((2, 2)))
        assert np.array_equal(result, np.zeros((2, 2))) and result.dtype == np.float32

    def test_given_index_bands_are_used_as_they_are(self):
        raw = {name: np.full((1, 1), 7.0) for name in ("blue", "green", "red", "nir", "swir")}
        raw["ndvi"] = np.full((1, 1), 0.25)
        layers = build_layers(raw, np.ones((1, 1), bool))
        assert layers[0, 0, 5] == pytest.approx(0.25) and layers[0, 0, 6] == 0

    def test_stretch_maps_1st_and_99th_percentiles_to_0_and_1(self):
        values = np.random.default_rng(0).normal(100, 20, size=(200, 300)).astype(np.float32)
        layers = np.repeat(values[..., None], 8, axis=2)
        limits = stretch_limits(layers, np.ones(values.shape, bool), LAYER_NAMES)
        layers = apply_stretch(layers, limits, np.ones(values.shape, bool))
        low, high = np.percentile(values, [1, 99])
        assert limits["red"] == pytest.approx((low, high), rel=1e-5)
        expected = np.clip((values - low) / (high - low), 0, 1)
        np.testing.assert_allclose(layers[..., 2], expected, atol=1e-5)
        assert layers.min() == 0 and layers.max() == 1

    def test_stretch_ignores_invalid_pixels(self):
        values = np.arange(100, dtype=np.float32).reshape(10, 10)
        valid = values < 50
        layers = np.repeat(values[..., None], 8, axis=2)
        limits = stretch_limits(layers, valid, LAYER_NAMES)
        layers = apply_stretch(layers, limits, valid)
        assert limits["blue"][1] < 50 and (layers[~valid] == 0).all()


def lab_of(layers: np.ndarray, names) -> np.ndarray:
    """What Step 0 gives SLIC: the CIELAB image of three layers."""
    return slic_lab(layers, names)


class TestSuperpixels:
    def test_slic_ids_are_consecutive_from_zero(self):
        rng = np.random.default_rng(1)
        layers = rng.random((60, 70, 8), dtype=np.float32)
        segments = superpixels.segment(lab_of(layers, ["red", "green", "blue"]), 40, 10, np.ones((60, 70), bool))
        assert segments.dtype == np.int32 and segments.shape == (60, 70)
        assert np.array_equal(np.unique(segments), np.arange(segments.max() + 1))

    def test_slic_separates_quadrants(self):
        layers = np.zeros((40, 40, 8), np.float32)
        layers[:20, 20:, 2] = 1  # top-right red
        layers[20:, :20, 1] = 1  # bottom-left green
        segments = superpixels.segment(lab_of(layers, ["red", "green", "blue"]), 4, 1, np.ones((40, 40), bool))
        quadrants = [segments[:20, :20], segments[:20, 20:], segments[20:, :20], segments[20:, 20:]]
        assert all(np.unique(q).size == 1 for q in quadrants[1:3])
        assert not set(np.unique(quadrants[1])) & set(np.unique(quadrants[2]))

    def test_one_strip_equals_scikit_image_slic_on_the_rgb_triplet(self):
        from skimage.segmentation import slic

        layers = np.random.default_rng(3).random((80, 90, 8), dtype=np.float32)
        layers[0, 0, :3], layers[0, 1, :3] = 0, 1  # full [0, 1] range, as after the stretch
        ours = superpixels.segment(lab_of(layers, ["red", "green", "blue"]), 60, 20, np.ones((80, 90), bool), 1)
        reference = slic(layers[..., [2, 1, 0]], n_segments=60, compactness=20, channel_axis=-1, start_label=0)
        assert np.array_equal(ours, superpixels.consecutive_ids(reference))

    def test_lab_in_blocks_equals_scikit_image_rgb2lab(self):
        from skimage.color import rgb2lab

        rgb = np.random.default_rng(5).random((37, 11, 3), dtype=np.float32)
        lab = superpixels.to_lab(rgb, block_pixels=50)  # blocks of 4 rows, the last one of 1
        assert lab.dtype == np.float32 and np.array_equal(lab, rgb2lab(rgb))

    def test_strips_give_unique_ids_that_stop_at_strip_boundaries(self):
        layers = np.random.default_rng(4).random((100, 60, 8), dtype=np.float32)
        segments = superpixels.segment(lab_of(layers, ["nir", "swir", "ndvi"]), 40, 10, np.ones((100, 60), bool), 2)
        assert not set(np.unique(segments[:50])) & set(np.unique(segments[50:]))
        assert np.array_equal(np.unique(segments), np.arange(segments.max() + 1))

    def test_centroids_are_rounded_mean_positions(self):
        segments = np.array([[0, 0, 1], [0, 2, 1], [2, 2, 1]])
        centroids = superpixels.centroids(segments)
        assert centroids.tolist() == [[0, 0], [1, 2], [2, 1]]


def slow_majority(segments, codes, n_classes):
    """One superpixel at a time, the obvious way: labelled when half covered, or when 5 labelled pixels agree."""
    labels, purity = [], []
    for i in range(segments.max() + 1):
        member = codes[segments == i]
        counts = np.array([(member == c).sum() for c in range(n_classes)])
        covered = 2 * counts.sum() >= member.size
        agreeing = counts.sum() >= 5 and counts.max() >= 0.9 * counts.sum()
        labels.append(counts.argmax() if (covered or agreeing) and counts.sum() else 255)
        purity.append(counts.max() / max(counts.sum(), 1))
    return np.array(labels), np.array(purity)


class TestMajorityLabels:
    def test_matches_slow_computation_on_random_labels(self):
        rng = np.random.default_rng(2)
        segments = superpixels.consecutive_ids(rng.integers(0, 50, size=(40, 40)))
        codes = rng.choice([0, 1, 2, 3, 255], size=(40, 40), p=[0.2, 0.1, 0.1, 0.1, 0.5]).astype(np.uint8)
        labels, purity = majority_labels(class_counts(segments, codes, 4))
        expected_labels, expected_purity = slow_majority(segments, codes, 4)
        assert np.array_equal(labels, expected_labels)
        np.testing.assert_allclose(purity, expected_purity, rtol=1e-6)
        assert (labels == 255).any() and (labels != 255).any()

    def test_half_labelled_is_kept_and_less_is_unlabelled(self):
        segments = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
        codes = np.array([[2, 2, 3, 255], [255, 255, 255, 255]], np.uint8)
        labels, purity = majority_labels(class_counts(segments, codes, 4))
        assert labels.tolist() == [2, 255]
        assert purity.tolist() == [1.0, 1.0]  # of the labelled pixels

    def test_a_polygon_labels_the_superpixels_whose_labelled_pixels_agree(self):
        segments = np.repeat(np.arange(4), 20)[None, :]  # four superpixels of 20 pixels, 6 or 4 of them labelled
        codes = np.full((1, 80), 255, np.uint8)
        codes[0, 0:6] = 1  # 6 agreeing: labelled
        codes[0, 20:25], codes[0, 25] = 1, 2  # 5 of 6 agree, below 90 %: unlabelled
        codes[0, 40:44] = 3  # 4 agreeing, below the 5 pixels: unlabelled
        codes[0, 60:65], codes[0, 65:80] = 0, 255
        labels, purity = majority_labels(class_counts(segments, codes, 4))
        assert labels.tolist() == [1, 255, 255, 0]
        np.testing.assert_allclose(purity, [1, 5 / 6, 1, 1])

    def test_a_reference_covering_every_pixel_labels_every_superpixel_by_its_majority(self):
        rng = np.random.default_rng(3)
        segments = superpixels.consecutive_ids(rng.integers(0, 50, size=(40, 40)))
        codes = rng.choice(4, size=(40, 40), p=[0.4, 0.3, 0.2, 0.1]).astype(np.uint8)
        counts = class_counts(segments, codes, 4)
        labels, purity = majority_labels(counts)
        assert np.array_equal(labels, counts[:, :4].argmax(axis=1))
        np.testing.assert_allclose(purity, counts[:, :4].max(axis=1) / counts.sum(axis=1), rtol=1e-6)


class TestPatches:
    def test_blocks_of_any_size_cut_the_patches_and_masks_of_a_tile_with_its_halo(self):
        rng = np.random.default_rng(5)
        segments = superpixels.consecutive_ids(rng.integers(0, 40, size=(30, 36)))  # scattered ids
        layers = rng.random((34, 40, 8), dtype=np.float32)  # the tile (30 x 36 px at scene pixel 10, 12) and its halo
        codes = rng.choice([0, 1, 255], size=segments.shape).astype(np.uint8)
        cut = {size: sampling.sample_superpixels(layers, segments, codes, 5, 2, (50, 60), (8, 10), (10, 12),
                                                 block_superpixels=size) for size in (3, 10**6)}
        for key in ("samples", "masks", "labels", "centroids"):
            assert np.array_equal(cut[3][key], cut[10**6][key])
        rows, cols = sampling.patch_indices(cut[3]["centroids"], 5, (50, 60), (8, 10))
        assert np.array_equal(cut[3]["samples"], layers[rows, cols])  # as plain fancy indexing of the layers cuts it
        owners = np.full(layers.shape[:2], -1)
        owners[2:32, 2:38] = segments
        assert np.array_equal(cut[3]["masks"], owners[rows, cols] == np.arange(len(rows))[:, None, None])

    def test_mirrored_window_at_borders(self):
        layers = np.arange(5 * 6, dtype=np.float32).reshape(5, 6, 1)
        patch = extract_patches(layers, np.array([[0, 0]]), 3)[0, ..., 0]
        assert patch.tolist() == [[7, 6, 7], [1, 0, 1], [7, 6, 7]]

    def test_every_patch_equals_layers_tif_window_at_its_centroid(self, step0_workdir):
        samples = contract.load(contract.SAMPLES, step0_workdir, ["samples", "centroids"])
        dataset = gdal.Open(str(step0_workdir / "layers.tif"))
        layers = np.moveaxis(dataset.ReadAsArray(), 0, -1)
        scale = dataset.GetRasterBand(1).GetScale()  # as QGIS reads the stored steps
        window = samples["samples"].shape[1]
        half = window // 2
        padded = np.pad(layers, ((half, half), (half, half), (0, 0)), mode="reflect")
        for i, (row, col) in enumerate(samples["centroids"]):
            cut = padded[row:row + window, col:col + window]
            assert np.array_equal(samples["samples"][i], contract.decode_unit_values(cut)), i
            assert np.abs(samples["samples"][i] - cut * scale).max() <= 1e-6, i

    def test_patches_are_stored_as_scaled_uint8_and_read_with_scipy_as_documented(self, step0_workdir):
        path = contract.SAMPLES.path(step0_workdir)
        mat = scipy.io.loadmat(path)  # MATLAB v5, as the tutorial reads it
        stored, scale = mat["samples"], float(mat["patch_scale"].ravel()[0])
        assert stored.dtype == np.uint8 and scale == 1 / 255
        outside = stored * scale  # the contract's recipe for code outside the pipeline
        np.testing.assert_allclose(outside, contract.load(contract.SAMPLES, step0_workdir, ["samples"])["samples"],
                                   atol=1e-7)
        float32_file = outside.size * 4 + outside.size // 8  # the float32 patches and uint8 masks written before
        assert path.stat().st_size < 0.25 * float32_file


    def test_masks_mark_the_superpixel_own_pixels_in_its_window(self, step0_workdir):
        segments = contract.load(contract.SEGMENTS, step0_workdir, ["segments"])["segments"]
        out = contract.load(contract.SAMPLES, step0_workdir, ["masks", "centroids"])
        half = out["masks"].shape[1] // 2
        padded = np.pad(segments, half, mode="reflect")
        for i in range(0, len(out["centroids"]), 7):
            row, col = out["centroids"][i]
            window = padded[row:row + 2 * half + 1, col:col + 2 * half + 1]
            assert np.array_equal(out["masks"][i], (window == i).astype(np.uint8)), i
        assert out["masks"].dtype == np.uint8 and out["masks"][:, half, half].mean() > 0.9


class TestSplit:
    def test_no_training_patch_sees_a_test_pixel(self, step0_workdir):
        segments = contract.load(contract.SEGMENTS, step0_workdir, ["segments"])["segments"]
        out = contract.load(contract.SAMPLES, step0_workdir, ["split", "centroids", "labels", "samples"])
        window = out["samples"].shape[1]
        half = window // 2
        test_pixels = np.pad(np.isin(segments, np.flatnonzero(out["split"] == 1)), half, mode="reflect")
        train = np.flatnonzero(out["split"] == 0)
        assert train.size > 100
        for row, col in out["centroids"][train]:
            assert not test_pixels[row:row + window, col:col + window].any()

    def test_about_the_asked_share_of_labelled_superpixels_is_test(self, step0_workdir):
        out = contract.load(contract.SAMPLES, step0_workdir, ["split", "labels"])
        labelled = out["labels"] != 255
        share = (out["split"][labelled] == 1).mean()
        assert 0.25 <= share <= 0.45
        assert (out["split"][~labelled] == 2).all()

    def test_split_is_spatial_blocks(self):
        segments = np.arange(64 * 64).reshape(64, 64) // 64  # one superpixel per row
        centroids = superpixels.centroids(segments)
        labels = np.zeros(64, np.uint8)
        split = spatial_split(segments, centroids, labels, 3, 16, 0.25, np.random.default_rng(0))
        test_rows = np.flatnonzero(split == 1)
        assert test_rows.size == 16 and np.ptp(test_rows) == 15  # one 16-row block
        unused = np.flatnonzero(split == 2)
        assert set(unused) <= {test_rows.min() - 1, test_rows.max() + 1} and unused.size >= 1


class TestOutputs:
    def test_georeferencing_is_kept(self, step0_workdir):
        source = gdal.Open(str(SUBSET))
        for name in ("layers.tif", "segments.tif"):
            out = gdal.Open(str(step0_workdir / name))
            assert out.GetGeoTransform() == source.GetGeoTransform()
            assert out.GetSpatialRef().IsSame(source.GetSpatialRef())
            assert (out.RasterXSize, out.RasterYSize) == (source.RasterXSize, source.RasterYSize)
        layers = gdal.Open(str(step0_workdir / "layers.tif"))
        assert [layers.GetRasterBand(i + 1).GetDescription() for i in range(8)] == list(LAYER_NAMES)

    def test_hand_off_keys_shapes_and_types(self, step0_workdir):
        segments = scipy.io.loadmat(step0_workdir / "segments.mat")["segments"]
        out = scipy.io.loadmat(step0_workdir / "samples_labels.mat")  # MATLAB v5, as the README says
        n = segments.max() + 1
        assert segments.dtype == np.int32 and segments.shape == (339, 324)
        assert out["samples"].shape == (n, 25, 25, 8) and out["samples"].dtype == np.uint8
        layers = out["samples"] * out["patch_scale"]
        assert layers.dtype == np.float64 and layers.min() >= 0 and layers.max() == 1
        assert out["labels"].size == n and out["labels"].dtype == np.uint8
        assert out["centroids"].shape == (n, 2)
        assert set(np.unique(out["split"])) <= {0, 1, 2}
        assert [str(s).strip() for s in out["class_names"].ravel()] == ["urban", "crop", "vegetation", "water"]

    def test_quicklooks_and_figures_are_written(self, step0_workdir):
        for name in ("rgb", "nir_green_blue", "swir_green_blue", "ndvi", "ndwi", "ndbi", "segments_boundaries",
                     "example_patches", *(f"histogram_{layer}" for layer in LAYER_NAMES)):
            assert (step0_workdir / f"{name}.png").stat().st_size > 1000, name

    def test_explore_writes_a_grid_and_stops(self, explored_workdir):
        assert (explored_workdir / "explore_slic.png").is_file()
        assert not (explored_workdir / "segments.mat").exists()


class TestLayerChoice:
    def test_layers_by_name_or_index(self):
        from pipeline.run.config import Parameters

        params = Parameters().replaced({"train_layers": [2, "green", "0", 8], "projector_layers": ["nir", 1, 0]},
                                       "test")
        assert params.train_layers == ("red", "green", "blue", "mask")
        assert params.projector_layers == ("nir", "green", "blue")
