"""Tutorial sections 3-4: the patch CNN (channels, training, prediction, prior correction), its training logs,
the superpixel random forest (Step 3's baseline, or Step 2's classifier), the map files, and how unlike its
training scene a scene is.
"""
