"""Pure foundations every package shares, with no files and no GDAL: the vocabulary (layer names, class, superpixel
and split codes, step names), the errors reported as one line, and grid arithmetic (tile windows, halos, previews,
painting superpixel values). Imports nothing else of the pipeline.
"""
