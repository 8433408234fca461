"""Networks: backbones and heads."""
