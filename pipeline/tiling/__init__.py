"""Whole Sentinel-2 tiles on a Dask cluster: the client, the files a tiled Step 0 fills tile by tile, and
prediction chunk by chunk.
"""
