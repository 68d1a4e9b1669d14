"""Data: one module per source (digits, idx, image_folder, segmentation_folder, tfds_source),
each giving example dicts, and the pipeline that batches, caches, shuffles and augments them."""

from zoo.data.pipeline import SOURCES, Data, build, preprocessing

__all__ = ["SOURCES", "Data", "build", "preprocessing"]
