"""Tutorial section 5 and beyond: confusion matrices and accuracies, pixel counts window by window, area
estimates with intervals, designed validation samples, labelling suggestions, Step 3's figures and report.
"""
