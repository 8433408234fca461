"""nbr_contrast: neighbour-based contrastive learning methods for PyTorch Lightning."""

__version__ = "0.1.0"
