"""Model families. Importing this package registers every builder, one module per family."""

from zoo.models import keras_apps, lenet, resnet, text, unet, vgg  # noqa: F401
