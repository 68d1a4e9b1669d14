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
