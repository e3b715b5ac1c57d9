"""Writing the steps' images and figures as PNG files, and QGIS styles of class rasters, each whole or not at
all (:func:`~pipeline.core.atomic_files.atomic_output`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.core.atomic_files import atomic_output
from pipeline.core.png import png_bytes


def save_png(path: Path, image_or_figure, crop: bool = True) -> None:
    """Write a uint8 image array (:func:`~pipeline.core.png.png_bytes`) or a matplotlib Figure to PNG atomically
    (figures are closed); a figure is cropped to what it draws, unless ``crop`` is False (for a figure with its own
    margins: cropping draws it twice).

    PNGs use zlib level 1: about 5x faster than the default on photos of scenes, files a little larger.
    """
    with atomic_output(path) as temporary:
        if isinstance(image_or_figure, np.ndarray):
            Path(temporary).write_bytes(png_bytes(image_or_figure))
        else:
            import matplotlib.pyplot as plt

            image_or_figure.savefig(temporary, format="png", dpi=110, bbox_inches="tight" if crop else None,
                                    pil_kwargs={"compress_level": 1})
            plt.close(image_or_figure)


def write_qml(path: Path, class_names, class_colours, nodata=255) -> None:
    """Write a QGIS layer style (.qml) for a class raster, atomically: a paletted renderer of band 1 with one
    entry per class value (its colour and name as label), and ``nodata`` shown transparent."""
    import xml.etree.ElementTree as ET

    root = ET.Element("qgis", {"version": "3.28.0", "styleCategories": "AllStyleCategories"})
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(pipe, "rasterrenderer", {"type": "paletted", "band": "1", "opacity": "1",
                                                      "alphaBand": "-1", "nodataColor": ""})
    transparency = ET.SubElement(renderer, "rasterTransparency")
    if nodata is not None:
        pixels = ET.SubElement(transparency, "singleValuePixelList")
        ET.SubElement(pixels, "pixelListEntry", {"min": f"{nodata:g}", "max": f"{nodata:g}",
                                                 "percentTransparent": "100"})
    palette = ET.SubElement(renderer, "colorPalette")
    for value, (name, colour) in enumerate(zip(class_names, class_colours)):
        ET.SubElement(palette, "paletteEntry", {"value": str(value), "label": str(name), "alpha": "255",
                                                "color": "#{:02x}{:02x}{:02x}".format(*colour[:3])})
    ET.SubElement(pipe, "brightnesscontrast", {"brightness": "0", "contrast": "0", "gamma": "1"})
    ET.SubElement(pipe, "rasterresampler", {"maxOversampling": "2"})
    ET.SubElement(root, "blendMode").text = "0"
    ET.indent(root)
    text = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + ET.tostring(root, encoding="unicode")
    with atomic_output(path) as temporary:
        Path(temporary).write_text(text + "\n", encoding="utf-8")
