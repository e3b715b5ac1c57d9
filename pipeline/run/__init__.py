"""Running a step: the scene configuration and its parameters (which also make the command-line flags and their
help), the command line, output sets committed whole, the figures several steps draw, and writing PNGs and QGIS
styles.
"""
