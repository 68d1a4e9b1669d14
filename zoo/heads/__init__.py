"""Task heads over a backbone's feature taps (see zoo.backbones)."""

from zoo.heads.classification import classification

__all__ = ["classification"]
