"""Training-time monitors: the kNN classifier, feature extraction and label bookkeeping.

Methods and the neighbour-index callback use them while training; the offline evaluation
tasks of ``nbr_contrast.app`` reuse the same classifier.
"""
