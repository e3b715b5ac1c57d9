"""Step 0, data preparation (tutorial sections 1, 2.1 and 2.2): layers, superpixels and patch samples.

Section 1: puts the scene's image and land-cover reference on one work grid, the image's
(``pipeline/inputs/sources.py``): the image may be any raster or a Sentinel-2 product (``.SAFE`` folder, its
``.zip``, a folder of band files), read at 10 m as reflectance and cut to the ``aoi``, its clouds, shadows and bad
pixels masked (``pipeline/inputs/clouds.py``), several dates combined as the median of their clear observations
(``pipeline/inputs/composite.py``); the reference, if any, a raster on any grid and CRS or a vector file,
resampled or rasterized to class codes. Then builds the tutorial's 8 layers (Blue, Green, Red, NIR, SWIR, NDVI,
NDWI, NDBI) stretched to [0, 1] (``pipeline/segmentation/layers.py``).
Section 2.1: segments 3 of them into SLIC superpixels (``pipeline/segmentation/superpixels.py``).
Section 2.2: cuts one w x w x 8 patch centred on every superpixel, labelled by the majority class of its
reference pixels (``pipeline/segmentation/sampling.py``). A block split (``pipeline/segmentation/split.py``) marks
superpixels for training or testing; no training patch sees a test pixel.

Inputs: the scene TOML (``--config``, default ``data/aberystwyth.toml``): its image, reference, ``aoi`` and
``mask``; with ``--stretch-from``, a trained model whose stretch limits to use.

Outputs in the work folder (``data/<name>/`` by default; keys and types in ``pipeline/handoffs/contract.py``):

- ``sources/`` (what the work grid was made from; ``image.tif``: a masked image or composite), ``layers.tif``
  (8 stretched layers in [0, 1] as uint8 steps of 1/255, that band scale set), ``reference.tif`` (codes,
  uint8, 255 = unlabelled, colours), on the work grid;
- quicklooks (``pipeline/segmentation/quicklooks.py``): ``rgb.png``, ``nir_green_blue.png``, ``swir_green_blue.png``,
  ``ndvi.png``, ``ndwi.png``, ``ndbi.png``, ``histogram_<layer>.png``;
- ``segments.mat`` (``segments``: int32 rows x cols, superpixel ids 0..n-1, -1 on masked and nodata pixels),
  ``segments.tif``,
  ``segments_boundaries.png``;
- ``samples_labels.mat``: ``samples`` (n x w x w x 8, uint8 steps of ``patch_scale`` = 1/255), ``masks``
  (n x w x w uint8, 1 on the superpixel's own pixels), ``labels`` (n uint8, 255 = unlabelled), ``centroids``
  (n x 2 int32, row and column), ``purity`` (n float32), ``class_names``, ``layer_names``, ``split`` (n uint8:
  0 train, 1 test, 2 unused);
- ``clear_observations.tif`` (uint8, the clear dates of each pixel) and ``.png``, for a masked scene;
- ``example_patches.png``, and ``run.json`` (parameters, timings, package versions, input checksums, sources).

Two drivers (``pipeline/workflow/prepare.py``): the whole scene in memory (default); ``--tile-size``, tile by
tile with a halo on a Dask cluster (``--scheduler``, ``--workers``) for scenes bigger than memory
(``pipeline/tiling/prepare_tiles.py``), whose hand-offs are MATLAB 7.3 files; both end in the same finishing
path. ``--explore`` instead renders SLIC boundaries for a range of ``compactness`` and ``n_segments`` values on a
crop (tutorial 2.1), writes ``explore_slic.png`` and stops.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.run import cli
from pipeline.run.config import Scene
from pipeline.workflow.prepare import (explore_slic, finish, inputs_on_work_grid, layers_superpixels_and_samples,
                                       step0_run)


def prepare(scene: Scene, scheduler: str | None = None, workers: int | None = None, explore: bool = False) -> None:
    """Step 0 on ``scene``, its outputs committed as one set; with ``explore``, only the SLIC exploration. A
    tiled scene (``tile_size``) runs on the Dask cluster at ``scheduler``, or on a LocalCluster of ``workers``."""
    if explore:
        return explore_slic(scene)  # 2.1: SLIC's parameters tried on a crop, to choose them with
    with step0_run(scene, scheduler, workers) as run:  # the output set, checksums, the cluster of a tiled run
        inputs = inputs_on_work_grid(run)  # 1: the image stacked, cut and masked on one grid; the reference warped
        prepared = layers_superpixels_and_samples(run, inputs)  # 1: 8 stretched layers; 2.1: SLIC; 2.2: patches
        finish(run, inputs, prepared)  # boundaries, example patches, the class summary, run.json


def build_parser():
    """Step 0's command line: the common flags, its parameters, the cluster, ``--stretch-from`` and ``--explore``."""
    parser = cli.build_parser(__doc__, ["n_segments", "compactness", "slic_layers", "patch_width",
                                        "test_fraction", "block_size", "tile_size", "masking", "mask_classes",
                                        "mask_buffer_m"], seed="split_seed")
    cli.add_cluster_flags(parser)
    parser.add_argument("--stretch-from", type=Path, default=None, metavar="MODEL",
                        help="model.keras of a trained model: stretch the layers with its training scene's limits, "
                             "so that it sees this scene's inputs scaled as in training (default: the TOML's "
                             "stretch_from, else this scene's own 1-99 %% limits)")
    parser.add_argument("--explore", action="store_true",
                        help="only render SLIC boundaries for several compactness and n_segments values on a crop")
    return parser


def main(argv=None) -> int:
    """Step 0 from the command line (``--help`` lists the flags)."""
    return cli.run_step(build_parser(), argv, prepare, "scheduler", "workers", "explore")


if __name__ == "__main__":
    cli.exit_process(main())
