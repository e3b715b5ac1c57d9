"""Figures more than one step draws: class maps in the class colours with a legend. Figures are returned,
never shown; :func:`pipeline.run.files.save_png` writes them."""
from __future__ import annotations

import numpy as np

from pipeline.core.colours import class_palette
from pipeline.core.grids import display_stride


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend (no display needed), drawing every text as text:
    class names and paths with ``$`` are not read as mathtext, and a glyph the font lacks (a box in the figure)
    warns nobody on stderr."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False
    warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font", category=UserWarning)
    import matplotlib.pyplot as plt

    return plt


def legend_handles(class_names, colours=None):
    """Matplotlib patches naming each class in its colour (default: the class palette), for map legends."""
    from matplotlib.patches import Patch

    colours = class_palette(class_names) if colours is None else colours
    return [Patch(color=np.array(colour) / 255, label=name) for name, colour in zip(class_names, colours)]


def plot_class_map(codes: np.ndarray, class_names, title: str, axis=None, colours=None):
    """Plot class codes (rows, cols) in the class colours, or in ``colours`` (one RGB tuple per code), blank
    (white) = no class, with a legend; returns the Figure."""
    if axis is None:
        _, axis = pyplot().subplots(figsize=(8, 7))
    step = display_stride(*codes.shape)
    axis.imshow(colourise(codes[::step, ::step], class_names, colours), interpolation="nearest")
    axis.set_title(title)
    axis.set_axis_off()
    axis.legend(handles=legend_handles(class_names, colours), loc="lower right", fontsize=8, framealpha=0.9)
    return axis.figure


def colourise(codes: np.ndarray, class_names, colours=None) -> np.ndarray:
    """Turn class codes 0..K-1 of shape (rows, cols) into an RGB uint8 image; other codes (unlabelled, masked)
    are blank (white).
    ``colours`` (K RGB tuples) replaces the class palette.

    >>> colourise(np.array([[0, 255]], np.uint8), ["water"]).tolist()
    [[[31, 59, 255], [255, 255, 255]]]
    >>> colourise(np.array([[0]], np.uint8), ["agree"], [(0, 128, 0)]).tolist()
    [[[0, 128, 0]]]
    """
    lookup = np.full((256, 3), 255, dtype=np.uint8)
    lookup[: len(class_names)] = class_palette(class_names) if colours is None else colours
    return lookup[codes]
