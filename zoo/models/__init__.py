"""Model families. Importing this package registers every builder, one module per family."""

from zoo.models import lenet, resnet, vgg  # noqa: F401
