"""Whole Sentinel-2 tiles on a Dask cluster: the client, the tiled Step 0 and the files it fills tile by tile,
and prediction chunk by chunk.
"""
