"""Custom layers used by zoo builders; registered so saved models load in Keras' safe mode."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="zoo")
class ShortcutPad(keras.layers.Layer):
    """Parameter-free residual shortcut: subsample by `strides` and zero-pad the channels.

    The "option A" identity shortcut of He et al. 2015, section 4.2, used by the CIFAR ResNets.

    Args:
        filters: channel count of the output; at least the input's.
        strides: spatial subsampling factor.
    """

    def __init__(self, filters: int, strides: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.strides = int(strides)

    def call(self, x):
        if self.strides > 1:
            x = x[:, :: self.strides, :: self.strides, :]
        extra = self.filters - x.shape[-1]
        if extra:
            x = ops.pad(x, [[0, 0], [0, 0], [0, 0], [extra // 2, extra - extra // 2]])
        return x

    def compute_output_shape(self, input_shape):
        def down(n):
            return None if n is None else -(-n // self.strides)

        batch, h, w, _ = input_shape
        return (batch, down(h), down(w), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides}


@keras.saving.register_keras_serializable(package="zoo")
class BatchNorm(keras.layers.BatchNormalization):
    """Keras' BatchNormalization (same arguments, weights and results), which trains through
    TensorFlow's fused batch-norm kernel where it can: one operation forward and one backward
    instead of the moments, the normalization and their gradients as separate operations
    (ResNet-18 training took about 7% less CPU time per image on TensorFlow here). That is on
    the TensorFlow backend, for 4-D channels-last inputs without a mask, renorm or
    synchronized statistics; elsewhere, and at inference (so in every export), it is Keras'
    own layer."""

    def call(self, inputs, training=None, mask=None):
        if not (
            training
            and self.trainable
            and mask is None
            and not self.renorm
            and not self.synchronized
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and keras.backend.backend() == "tensorflow"
        ):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = tf.cast(inputs, "float32")  # as Keras' layer computes under mixed precision
        channels = x.shape[-1]
        gamma = tf.cast(self.gamma, "float32") if self.scale else tf.ones([channels])
        beta = tf.cast(self.beta, "float32") if self.center else tf.zeros([channels])
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, gamma, beta, epsilon=self.epsilon, is_training=True
        )[:3]
        # The kernel's batch variance is the unbiased one; Keras keeps the biased in its
        # moving variance.
        n = tf.cast(tf.size(x) // channels, "float32")
        variance = variance * (n - 1.0) / tf.maximum(n, 1.0)
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
        return tf.cast(y, self.compute_dtype)


@keras.saving.register_keras_serializable(package="zoo")
class ReverseChannels(keras.layers.Layer):
    """Reverses the channel axis: RGB to BGR, as the "caffe" preprocessing of keras.applications'
    ResNet (v1) and VGG weights expects."""

    def call(self, x):
        return ops.flip(x, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="zoo")
class CosineLogits(keras.layers.Layer):
    """cos θ between each L2-normalised input and `classes` L2-normalised class centres (the
    trainable weights): the logits of a margin softmax (ArcFace, CosFace) before the margin and
    the scale, which the loss (`zoo.losses.MarginLoss`) applies with the labels. Computed in
    float32 under mixed precision.

    Args:
        classes: the number of identities (class centres).

    Example:

    ```python
    cosines = CosineLogits(30)(embeddings)  # (batch, 30), each in [-1, 1]
    ```
    """

    def __init__(self, classes: int, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.classes = int(classes)

    def build(self, input_shape):
        self.centres = self.add_weight(
            shape=(input_shape[-1], self.classes), initializer="glorot_uniform", name="centres"
        )

    def call(self, x):
        x = ops.normalize(ops.cast(x, self.compute_dtype), axis=-1)
        return ops.matmul(x, ops.normalize(self.centres, axis=0))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.classes)

    def get_config(self):
        return {**super().get_config(), "classes": self.classes}


@keras.saving.register_keras_serializable(package="zoo")
class ResizeLike(keras.layers.Layer):
    """Resizes `x` (bilinear) to the height and width of `like`, known only when called: an
    any-size segmentation export gives masks at its input's size. TensorFlow only (exports)."""

    def call(self, x, like):
        import tensorflow as tf

        return tf.image.resize(x, tf.shape(like)[1:3], method="bilinear")

    def compute_output_shape(self, x_shape, like_shape):
        return (x_shape[0], like_shape[1], like_shape[2], x_shape[3])


# Keras' own punctuation class for TextVectorization's "strip_punctuation".
PUNCTUATION = r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']'


@keras.saving.register_keras_serializable(package="zoo")
def split_punctuation_zero_digits(texts):
    """TextVectorization's `standardize` for data.standardize =
    "lower_split_punctuation_zero_digits": lower case, every punctuation mark a space (so
    "a/b" is two words, where Keras' strip would make "ab"), every digit 0 (so numbers of one
    length share one token: "08712460324" and "09061701461" are both "00000000000")."""
    import tensorflow as tf

    texts = tf.strings.lower(texts)
    texts = tf.strings.regex_replace(texts, PUNCTUATION, " ")
    return tf.strings.regex_replace(texts, "[0-9]", "0")


@keras.saving.register_keras_serializable(package="zoo")
class TanTriggs(keras.layers.Layer):
    """Tan and Triggs' illumination normalisation of face images (IEEE TIP 2010, section
    III): gamma correction, a difference of Gaussians (a band-pass filter that takes away the
    slow shading of the lighting and the background's brightness, and the finest noise), then
    a two-stage contrast equalisation squashed by tanh into a fixed range. Each image and
    channel is normalised alone; nothing is trained. Pixels in [0, 1] in, values in [0, 1]
    out (0.5 where the band-pass is flat).

    Args:
        gamma: the exponent of the gamma correction (the paper's 0.2).
        sigma_inner: the inner Gaussian's standard deviation in pixels (the paper's 1, on its
            aligned faces; 0 for none).
        sigma_outer: the outer Gaussian's (the paper's 2).
        alpha: the exponent of the contrast equalisation's means (0.1).
        tau: the value the equalisation clips large values at (10).

    Example:

    ```python
    x = TanTriggs(sigma_inner=0.6, sigma_outer=1.2)(faces / 255.0)
    ```
    """

    def __init__(self, gamma=0.2, sigma_inner=1.0, sigma_outer=2.0, alpha=0.1, tau=10.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not 0 <= sigma_inner < sigma_outer:
            raise ValueError(
                f"TanTriggs needs 0 <= sigma_inner < sigma_outer; got {sigma_inner}, {sigma_outer}"
            )
        self.gamma, self.alpha, self.tau = float(gamma), float(alpha), float(tau)
        self.sigma_inner, self.sigma_outer = float(sigma_inner), float(sigma_outer)

    def _band_pass(self, x):
        """x filtered by the difference of the two Gaussians (each truncated at 4 sigma, as
        scipy's gaussian_filter is), as one convolution, reflected at the borders: its result,
        small beside the image, is one tensor, which int8 quantization keeps in its own
        range."""
        import numpy as np

        radius = int(4 * self.sigma_outer + 0.5)
        offsets = np.arange(-radius, radius + 1)

        def gaussian(sigma):
            if sigma == 0:
                taps = (offsets == 0).astype("float64")
            else:
                taps = np.exp(-0.5 * (offsets / sigma) ** 2) * (
                    np.abs(offsets) <= int(4 * sigma + 0.5)
                )
            taps = taps / taps.sum()
            return np.outer(taps, taps)

        kernel = (gaussian(self.sigma_inner) - gaussian(self.sigma_outer)).astype("float32")
        channels = x.shape[-1]
        kernel = np.tile(kernel[:, :, None, None], (1, 1, channels, 1))
        x = ops.pad(x, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="reflect")
        return ops.depthwise_conv(x, kernel, padding="valid")

    def call(self, x):
        x = ops.power(ops.clip(ops.cast(x, "float32"), 0.0, 1.0) + 1e-3, self.gamma)
        # Less each image's mean before the band-pass and after it: in float the first changes
        # nothing (the filter takes constants to 0) and the second little (the band-pass's mean
        # is near 0), but int8 weights do not sum to exactly 0, and what they would leave of
        # the image's brightness would swamp the small band-pass.
        x = x - ops.mean(x, axis=(1, 2), keepdims=True)
        x = self._band_pass(x)
        x = x - ops.mean(x, axis=(1, 2), keepdims=True)
        a, tau = self.alpha, self.tau
        # The two means' floor (1e-6 of the pixel range) leaves a flat image flat (0.5).
        x = x / ops.maximum(ops.mean(ops.abs(x) ** a, axis=(1, 2), keepdims=True) ** (1 / a), 1e-6)
        clipped = ops.minimum(ops.abs(x), tau) ** a
        x = x / ops.maximum(ops.mean(clipped, axis=(1, 2), keepdims=True) ** (1 / a), 1e-6)
        return 0.5 + 0.5 * ops.tanh(x / tau)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "gamma": self.gamma,
            "sigma_inner": self.sigma_inner,
            "sigma_outer": self.sigma_outer,
            "alpha": self.alpha,
            "tau": self.tau,
        }
