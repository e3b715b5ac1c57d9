"""Figures more than one step draws: class maps in the class colours with a legend and, given the scene's grid,
map coordinates (easting and northing in the grid's CRS) and a scale bar. Figures are returned, never shown;
:func:`pipeline.run.files.save_png` writes them."""
from __future__ import annotations

import math
import re

import numpy as np

from pipeline.core.colours import class_palette
from pipeline.core.grids import Grid, display_stride


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


def crs_label(wkt: str) -> str:
    """A short name of the CRS in ``wkt`` (WKT1 or WKT2, as GDAL writes it): its name and, where the WKT
    ends with an EPSG code, that code; "" without a CRS. No GDAL needed.

    >>> crs_label('PROJCS["OSGB 1936 / British National Grid",GEOGCS["OSGB 1936"],AUTHORITY["EPSG","27700"]]')
    'OSGB 1936 / British National Grid (EPSG:27700)'
    >>> crs_label('PROJCRS["WGS 84 / UTM zone 30N",BASEGEOGCRS["WGS 84"],ID["EPSG",32630]]'), crs_label("")
    ('WGS 84 / UTM zone 30N (EPSG:32630)', '')
    """
    name = re.match(r'\s*\w+\["([^"]*)"', wkt or "")
    code = re.search(r'(?:AUTHORITY\["EPSG",\s*"(\d+)"\]|ID\["EPSG",\s*(\d+)\])\]\s*$', wkt or "")
    epsg = f"EPSG:{code.group(1) or code.group(2)}" if code else ""
    if name and epsg:
        return f"{name.group(1)} ({epsg})"
    return name.group(1) if name else epsg


def scale_bar_length(width: float) -> float:
    """A round length (1, 2 or 5 times a power of ten) of about a fifth of ``width``, in the same units.

    >>> scale_bar_length(3240.0), scale_bar_length(9300.0), scale_bar_length(120_000.0)
    (500.0, 1000.0, 20000.0)
    """
    target = width / 5
    power = 10.0 ** math.floor(math.log10(target))
    return max(step * power for step in (1, 2, 5) if step * power <= target)


def distance_text(metres: float) -> str:
    """A distance in metres as text: metres below 1 km, else kilometres.

    >>> distance_text(500.0), distance_text(2000.0), distance_text(2500.0)
    ('500 m', '2 km', '2.5 km')
    """
    return f"{metres:g} m" if metres < 1000 else f"{metres / 1000:g} km"


def add_map_frame(axis, grid: Grid) -> None:
    """Turn ``axis`` (holding an image drawn with ``extent`` = the bounds of the north-up ``grid``) into a map:
    easting and northing ticks in kilometres of the grid's CRS, its name in the axis labels, and a scale bar in
    the lower left corner."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    xmin, ymin, xmax, ymax = grid.bounds
    kilometres = FuncFormatter(lambda value, _: f"{value / 1000:g}")
    for ticks, formatter in ((axis.xaxis, kilometres), (axis.yaxis, kilometres)):
        ticks.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
        ticks.set_major_formatter(formatter)
    axis.tick_params(labelsize=8)
    crs = crs_label(grid.crs_wkt)
    axis.set_xlabel(f"easting (km){', ' + crs if crs else ''}", fontsize=8)
    axis.set_ylabel("northing (km)", fontsize=8)
    length = scale_bar_length(xmax - xmin)
    bar = AnchoredSizeBar(axis.transData, length, distance_text(length), loc="lower left", pad=0.4, sep=3,
                          size_vertical=(ymax - ymin) / 150, frameon=True, fontproperties={"size": 8})
    bar.patch.set_alpha(0.85)
    axis.add_artist(bar)


def plot_class_map(codes: np.ndarray, class_names, title: str, axis=None, colours=None, *, grid=None):
    """Plot class codes (rows, cols) in the class colours, or in ``colours`` (one RGB tuple per code), blank
    (white) = no class, with a legend; returns the Figure.

    ``grid`` (a :class:`~pipeline.core.grids.Grid`, optional) is the scene's grid, of which ``codes`` may be a preview
    (every n-th row and column): given, the map is drawn in the grid's coordinates, with easting and northing
    ticks in km and a scale bar (:func:`add_map_frame`); without it, in pixels, without axes."""
    if axis is None:
        _, axis = pyplot().subplots(figsize=(8, 7), layout="constrained")
    step = display_stride(*codes.shape)
    extent = None
    if grid is not None:
        xmin, ymin, xmax, ymax = grid.bounds
        extent = (xmin, xmax, ymin, ymax)
    axis.imshow(colourise(codes[::step, ::step], class_names, colours), interpolation="nearest",
                extent=extent)
    axis.set_title(title)
    if grid is None:
        axis.set_axis_off()
    else:
        add_map_frame(axis, grid)
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
