"""Task heads over a backbone's feature taps (see zoo.backbones): functions returning a new
keras.Model, their layers named `head_*` and `predictions`."""

from zoo.heads.classification import classification
from zoo.heads.faces import embedding
from zoo.heads.segmentation import deeplabv3plus, fpn, unet

__all__ = ["classification", "deeplabv3plus", "embedding", "fpn", "unet"]
