"""Each Step script's work in the tutorial's order: the drivers the short Step scripts call. May import every
package of the pipeline.
"""
