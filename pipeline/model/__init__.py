"""Tutorial sections 3-4: the patch CNN (channels, training, prediction, prior correction), its training logs,
the map files, and how unlike its training scene a scene is.
"""
