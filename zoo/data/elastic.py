"""Keras' RandomElasticTransform, working on the batches of zoo's input pipeline.

Keras 3.15's layer has three faults there: in a batch whose size is unknown when traced (every
tf.data batch), it warps the first image and returns that warp for every image of the batch;
it draws a fresh random field for the segmentation masks, so they no longer fit their images;
and it displaces x and y by the same noise, so every pixel moves along the diagonal. This layer
takes the same arguments and draws the same kind of field (Simard et al. 2003: Gaussian noise
smoothed by a Gaussian of `sigma`, times `alpha`, both set by Keras' `scale` from the image
size), once per image and per batch, and moves images (bilinear or nearest) and masks (nearest)
by that one field. It runs in TensorFlow, as the input pipeline does."""

from __future__ import annotations

import math

import keras
import tensorflow as tf


def _blur(noise, sigma, radius: int):
    """`noise` (batch, height, width, channels) smoothed by a Gaussian of `sigma` (a scalar
    tensor), truncated at `radius` pixels, one axis at a time, zero beyond the borders."""
    x = tf.range(-radius, radius + 1, dtype=noise.dtype)
    kernel = tf.exp(-0.5 * tf.square(x / tf.maximum(sigma, 1e-3)))
    kernel /= tf.reduce_sum(kernel)
    channels = noise.shape[-1]
    column = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
    row = tf.reshape(column, [1, -1, channels, 1])
    noise = tf.nn.depthwise_conv2d(noise, column, [1, 1, 1, 1], "SAME")
    return tf.nn.depthwise_conv2d(noise, row, [1, 1, 1, 1], "SAME")


def _fill(coords, size, mode: str):
    """Integer source coordinates inside [0, size) for `mode`, as RandomElasticTransform's
    documentation draws them, and (for "constant" only) where they were inside to begin with."""
    if mode == "constant":
        return tf.clip_by_value(coords, 0, size - 1), (coords >= 0) & (coords < size)
    if mode == "nearest":
        return tf.clip_by_value(coords, 0, size - 1), None
    if mode == "wrap":
        return tf.math.floormod(coords, size), None
    # "reflect" (d c b a | a b c d | d c b a) and "mirror" (d c b | a b c d | c b a)
    if mode == "mirror":
        period = tf.maximum(2 * size - 2, 1)
        mod = tf.math.floormod(coords, period)
        return tf.where(mod < size, mod, period - mod), None
    period = 2 * size
    mod = tf.math.floormod(coords, period)
    return tf.where(mod < size, mod, period - 1 - mod), None


def warp(images, field, interpolation: str, fill_mode: str, fill_value: float):
    """`images` (batch, height, width, channels) sampled at each pixel plus `field` (batch,
    height, width, 2: the y and x displacement), bilinear or nearest."""
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    dtype = images.dtype
    ys, xs = tf.meshgrid(
        tf.range(height, dtype=field.dtype), tf.range(width, dtype=field.dtype), indexing="ij"
    )
    y = ys[None] + field[..., 0]
    x = xs[None] + field[..., 1]
    if interpolation == "nearest":
        corners = [(tf.floor(y + 0.5), tf.floor(x + 0.5), None)]
    else:
        y0, x0 = tf.floor(y), tf.floor(x)
        wy, wx = y - y0, x - x0
        corners = [
            (y0, x0, (1 - wy) * (1 - wx)),
            (y0, x0 + 1, (1 - wy) * wx),
            (y0 + 1, x0, wy * (1 - wx)),
            (y0 + 1, x0 + 1, wy * wx),
        ]
    flat = tf.reshape(images, [-1, shape[3]])
    base = tf.range(batch)[:, None, None] * height * width
    out = None
    for cy, cx, weight in corners:
        iy, inside_y = _fill(tf.cast(cy, tf.int32), height, fill_mode)
        ix, inside_x = _fill(tf.cast(cx, tf.int32), width, fill_mode)
        values = tf.gather(flat, base + iy * width + ix)
        if inside_y is not None:
            values = tf.where((inside_y & inside_x)[..., None], values, tf.cast(fill_value, dtype))
        if weight is not None:
            values = values * tf.cast(weight, dtype)[..., None]
        out = values if out is None else out + values
    return out


@keras.saving.register_keras_serializable(package="zoo")
class RandomElasticTransform(keras.layers.RandomElasticTransform):
    """keras.layers.RandomElasticTransform with the same arguments and distortion, one field
    per image, shared by the image and its masks (see the module's docstring)."""

    def get_random_transformation(self, data, training=True, seed=None):
        transformation = super().get_random_transformation(data, training, seed)
        if transformation is None:
            return None
        images = data["images"] if isinstance(data, dict) else data
        height, width = images.shape[self.height_axis], images.shape[self.width_axis]
        if height is None or width is None:
            raise ValueError(
                "RandomElasticTransform needs images of a known height and width; got "
                f"shape {tuple(images.shape)}"
            )
        batch = 1 if len(images.shape) == 3 else tf.shape(images)[0]
        factor = tf.cast(transformation["distortion_factor"], tf.float32)
        alpha, sigma = self.get_elastic_transform_params(height, width, factor)
        # Keras' kernel reaches 3 sigma each side; the largest sigma the scale can draw sets it.
        _, top = self.get_elastic_transform_params(height, width, max(self.scale))
        radius = max(1, min(math.ceil(3 * top), max(height, width)))
        seed = transformation["seed"]  # a SeedGenerator: Keras' own, or zoo's pipeline's
        seed = seed.next() if isinstance(seed, keras.random.SeedGenerator) else seed
        noise = tf.random.stateless_normal([batch, height, width, 2], seed=tf.cast(seed, tf.int64))
        transformation["field"] = alpha * _blur(noise * sigma, sigma, radius)
        return transformation

    def _transform_images(self, images, transformation, interpolation):
        if transformation is None:
            return images
        images = tf.convert_to_tensor(images)
        unbatched = len(images.shape) == 3
        if unbatched:
            images = images[None]
        if self.data_format == "channels_first":
            images = tf.transpose(images, [0, 2, 3, 1])
        warped = warp(
            tf.cast(images, tf.float32),
            transformation["field"],
            interpolation,
            self.fill_mode,
            self.fill_value,
        )
        apply = tf.reshape(transformation["apply_transform"], [-1, 1, 1, 1])
        images = tf.where(apply, warped, tf.cast(images, tf.float32))
        images = tf.clip_by_value(images, self.value_range[0], self.value_range[1])
        if self.data_format == "channels_first":
            images = tf.transpose(images, [0, 3, 1, 2])
        if unbatched:
            images = images[0]
        return tf.cast(images, self.compute_dtype)


# Layers zoo builds in place of Keras' own of the same name in [[augment]].
REPLACEMENTS = {"RandomElasticTransform": RandomElasticTransform}


def layer_class(name: str):
    """The class zoo builds for the [[augment]] layer `name`: its own where REPLACEMENTS has
    one, else Keras'. The recipe check and the input pipeline both ask here."""
    return REPLACEMENTS.get(name) or getattr(keras.layers, name)
