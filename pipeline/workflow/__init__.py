"""Each Step script's work in the tutorial's order: the drivers that put the science packages, the hand-offs,
the output sets and (for tiled runs) the cluster together, so that a Step script reads like its tutorial
section. It may import every package of the pipeline; no package imports it.
"""
