"""Pure foundations every package (and ``gdal_tif2rgb.py``) shares, with no GDAL: the vocabulary (layer names, class,
superpixel and split codes, step names), the errors reported as one line (one root), grid arithmetic (tile windows,
halos, previews, painting superpixel values), stretch arithmetic, class colours, a PNG encoder (bytes in memory),
how GeoTIFFs are compressed and given overviews, and files written whole or not at all. Imports nothing else of the
pipeline.
"""
