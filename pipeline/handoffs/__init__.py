"""The files the steps hand to each other: the contract (names, keys, dtypes, checked loaders and writers), MATLAB
.mat files, file fingerprints, the provenance records (a Step 0 run identified by a digest of what it made), how
settings flow from a step's hand-offs to the later steps, and the trained model's card.
"""
