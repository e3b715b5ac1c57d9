"""Tutorial sections 1-2 on arrays: the 8 stretched layers, SLIC superpixels, patches and majority labels,
the spatial train/test split, and Step 0's quicklooks.
"""
