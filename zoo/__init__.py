"""zoo: a Keras 3 model zoo with a registry of classic CNNs and declarative training recipes."""

from zoo.registry import get, info, list_models, register

__all__ = ["get", "info", "list_models", "register"]
__version__ = "0.1.0"
