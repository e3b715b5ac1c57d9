"""What the user gives, brought onto the work grid by GDAL: images, Sentinel-2 products, tiles, clouds and
several dates, references as rasters or polygons, georeferencing, and the point files people label in QGIS.
The only package besides ``gdal_tif2rgb.py`` that imports ``osgeo``.
"""
