"""The class colours: the tutorial's colour of each of its class names, distinct extras for other names. Class
GeoTIFFs, QGIS styles, the model card and every class map use them."""
from __future__ import annotations

#: The tutorial's class colours (RGB, 0-255), keyed by class name.
CLASS_COLOURS = {
    "urban": (255, 248, 18),
    "crop": (255, 119, 88),
    "vegetation": (11, 131, 20),
    "water": (31, 59, 255),
}
#: Colours for class names the tutorial does not have, taken in turn.
EXTRA_COLOURS = ((148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127), (23, 190, 207),
                 (188, 189, 34), (214, 39, 40), (44, 160, 44), (255, 187, 120), (174, 199, 232),
                 (152, 223, 138), (196, 156, 148), (219, 219, 141), (158, 218, 229), (247, 182, 210),
                 (99, 99, 99), (57, 59, 121), (132, 60, 57), (123, 65, 115), (82, 84, 163))


def class_palette(class_names) -> list[tuple[int, int, int]]:
    """RGB colour per class code: the tutorial's colour for its names, distinct extras otherwise.

    >>> class_palette(["water", "forest"])
    [(31, 59, 255), (148, 103, 189)]
    """
    extras = iter(EXTRA_COLOURS * (len(class_names) // len(EXTRA_COLOURS) + 1))
    return [CLASS_COLOURS.get(name, None) or next(extras) for name in class_names]
