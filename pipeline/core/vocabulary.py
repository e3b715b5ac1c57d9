"""The pipeline's vocabulary: layer and channel names, class, superpixel and split codes, the steps' names and the
stored precision of layer values. Pure constants, shared by every package; defined here once."""
from __future__ import annotations

#: The tutorial's 8 layers, in the order of ``layers.tif`` and of every patch's last axis.
LAYER_NAMES = ("blue", "green", "red", "nir", "swir", "ndvi", "ndwi", "ndbi")
SPECTRAL_BANDS = LAYER_NAMES[:5]
INDEX_LAYERS = LAYER_NAMES[5:]
#: Further Sentinel-2 bands a scene may name in ``[bands]`` (B05, B06, B07, B8A, B12): layers after the tutorial's
#: 8, in this order, stretched like them; by default the CNN sees them too.
EXTRA_BANDS = ("red_edge1", "red_edge2", "red_edge3", "nir_narrow", "swir2")


def layer_names_of(bands) -> tuple:
    """The layers of a scene whose bands are named ``bands`` (an iterable of layer names): the tutorial's 8, then
    the :data:`EXTRA_BANDS` among ``bands``.

    >>> layer_names_of(["blue", "swir2", "red_edge1"])[8:]
    ('red_edge1', 'swir2')
    """
    return (*LAYER_NAMES, *(name for name in EXTRA_BANDS if name in set(bands)))
#: Extra patch channel the CNN may see: 1 on the pixels of the superpixel the patch is centred on, else 0.
MASK_CHANNEL = "mask"
#: ``train_layers`` value: every layer of the scene, then the mask channel.
ALL_LAYERS = "all"
#: Class code of superpixels and pixels without a reference label, and map nodata.
UNLABELLED = 255
#: Segment id of masked and nodata pixels in ``segments``: they belong to no superpixel (nodata of ``segments.tif``).
NO_SUPERPIXEL = -1
#: Codes of the ``split`` hand-off.
TRAIN, TEST, UNUSED = 0, 1, 2

#: The four step scripts.
STEP0, STEP1, STEP2, STEP3 = ("Step0_Data_Preparation.py", "Step1_Class_Balance.py", "Step2_Model_Training.py",
                              "Step3_Accuracy_Assessment.py")
#: Stretched layer values in [0, 1] are stored as uint8 steps of 1 / UNIT_STEPS, 255 (to 0.002, finer than the
#: radiometric steps of most stretched bands), in ``layers.tif`` and in the patches: a quarter of float32's bytes.
UNIT_STEPS = 255
#: The value of one step: ``layers.tif``'s band scale and the stored ``patch_scale``.
UNIT_SCALE = 1 / UNIT_STEPS
#: The classifiers Step 2 trains (parameter ``classifier``): the tutorial's patch CNN, or the superpixel random forest.
CLASSIFIERS = ("cnn", "forest")
