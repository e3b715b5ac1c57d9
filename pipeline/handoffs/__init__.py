"""The files the steps hand to each other: the contract (names, keys, dtypes, checked loaders and writers), MATLAB
.mat files, file fingerprints and the trained model's card.
"""
