"""Convolutional networks over text as a 1D grid: token ids in, an embedding per token, then
convolution, ReLU and pooling along the sequence, as image nets do along height and width.

- TextCNN (Kim 2014, "Convolutional Neural Networks for Sentence Classification"): one layer of
  parallel convolutions of several window sizes, max-over-time pooling, dropout and a softmax
  classifier whose weight vectors are kept within an L2 norm (max-norm 3).
- Character CNN (Zhang, Zhao and LeCun 2015, "Character-level Convolutional Networks for Text
  Classification"), the paper's small variant: one-hot characters, six convolutions of 256 maps
  (windows 7, 7, 3, 3, 3, 3; max pooling by 3 after the 1st, 2nd and 6th), two dense layers
  of 1024 with dropout 0.5.

Both take int token ids of shape (sequence_length,): the text task puts
`keras.layers.TextVectorization` in front of them, so a trained model takes raw strings.
"""

from __future__ import annotations

import keras
from keras import layers

from zoo.errors import ZooError
from zoo.models._common import check_top, finish, predictions
from zoo.registry import register

KIM = "Kim 2014, Convolutional Neural Networks for Sentence Classification"
ZHANG = "Zhang, Zhao and LeCun 2015, Character-level Convolutional Networks for Text Classification"


def token_input(name: str, input_shape, default: tuple, min_length: int = 1):
    """A `keras.Input` of int token ids for `input_shape` (sequence_length,)."""
    shape = tuple(default if input_shape is None else input_shape)
    if len(shape) != 1 or shape[0] is None or int(shape[0]) < min_length:
        raise ZooError(
            f"{name}: input_shape must be (sequence_length,) with at least {min_length} "
            f"tokens (a recipe's data.sequence_length), received {shape}"
        )
    return keras.Input(shape=shape, dtype="int32", name="tokens")


def _check(name: str, classes, vocabulary_size) -> None:
    check_top(name, True, None, classes)
    if not isinstance(vocabulary_size, int) or vocabulary_size < 3:
        raise ZooError(
            f"{name}: vocabulary_size must be an integer of at least 3 (padding, OOV and one "
            f"token), received {vocabulary_size!r}"
        )


@register("textcnn", family="textcnn", tasks=("text",), input_shape=(100,), paper=KIM)
def textcnn(
    *,
    weights=None,
    input_shape=None,
    classes: int = 2,
    classifier_activation="softmax",
    vocabulary_size: int = 20_000,
    embedding_dim: int = 128,
    windows: tuple[int, ...] | list[int] = (3, 4, 5),
    filters: int = 100,
    dropout: float = 0.5,
    max_norm: float | None = 3.0,
    trainable_embeddings: bool = True,
    name: str = "textcnn",
):
    """TextCNN (Kim 2014): parallel Conv1D windows 3/4/5 of 100 maps, max-over-time pooling.

    The paper's CNN-rand (random embeddings trained with the net); with pretrained vectors
    loaded into the layer named "embedding" (the text task does so from `model.args.embeddings`)
    CNN-non-static, or CNN-static with `trainable_embeddings=False`.

    Args:
        weights: None or the path of a local weights file.
        input_shape: (sequence_length,) of the int token ids; default (100,).
        classes: number of classes.
        classifier_activation: activation of the output layer (None for logits).
        vocabulary_size: rows of the embedding (the vectorizer's vocabulary, padding and OOV
            included).
        embedding_dim: size of each token's vector (the paper: 300, word2vec's).
        windows: the convolution window sizes, one branch each.
        filters: feature maps per window size.
        dropout: dropout rate before the classifier.
        max_norm: the largest L2 norm of each classifier weight vector (None: no constraint).
        trainable_embeddings: whether the embedding trains.

    Example:

    ```python
    model = zoo.get("textcnn", input_shape=(64,), classes=2, vocabulary_size=10_000)
    ```
    """
    _check(name, classes, vocabulary_size)
    windows = tuple(windows)
    inputs = token_input(name, input_shape, (100,), min_length=max(windows))
    x = layers.Embedding(
        vocabulary_size, embedding_dim, trainable=trainable_embeddings, name="embedding"
    )(inputs)
    branches = []
    for w in windows:
        y = layers.Conv1D(filters, w, activation="relu", name=f"conv{w}")(x)
        branches.append(layers.GlobalMaxPooling1D(name=f"max_over_time{w}")(y))
    x = branches[0] if len(branches) == 1 else layers.Concatenate(name="concat")(branches)
    x = layers.Dropout(dropout, name="dropout")(x)
    constraint = keras.constraints.MaxNorm(max_norm) if max_norm else None
    outputs = layers.Dense(
        classes,
        activation=classifier_activation,
        kernel_constraint=constraint,
        name="predictions",
    )(x)
    return finish(inputs, outputs, name=name, weights=weights)


# (window, pool after) of the character CNN's six convolutions.
_CHAR_LAYERS = ((7, 3), (7, 3), (3, None), (3, None), (3, None), (3, 3))


def _char_min_length() -> int:
    """The shortest sequence whose last pooled map still has one position."""
    length = 1
    for window, pool in reversed(_CHAR_LAYERS):
        length = (length * pool if pool else length) + window - 1
    return length


@register("charcnn", family="charcnn", tasks=("text",), input_shape=(1014,), paper=ZHANG)
def charcnn(
    *,
    weights=None,
    input_shape=None,
    classes: int = 2,
    classifier_activation="softmax",
    vocabulary_size: int = 70,
    filters: int = 256,
    dense: int = 1024,
    dropout: float = 0.5,
    one_hot: bool = True,
    embedding_dim: int = 16,
    name: str = "charcnn",
):
    """Character CNN (Zhang et al. 2015), small: six Conv1D of 256 maps, two dense of 1024.

    Args:
        weights: None or the path of a local weights file.
        input_shape: (sequence_length,) of the int character ids; default (1014,), the paper's.
            At least 123 characters (the three poolings by 3 need them).
        classes: number of classes.
        classifier_activation: activation of the output layer (None for logits).
        vocabulary_size: the character vocabulary (padding and OOV included).
        filters: feature maps of each convolution (the paper's small model: 256; large: 1024).
        dense: units of each of the two dense layers (small: 1024; large: 2048).
        dropout: dropout rate after each dense layer.
        one_hot: characters as fixed one-hot vectors, as in the paper; False: a trained
            embedding of `embedding_dim`.
        embedding_dim: size of the trained embedding when `one_hot=False`.

    Example:

    ```python
    model = zoo.get("charcnn", input_shape=(256,), classes=4, vocabulary_size=70)
    ```
    """
    _check(name, classes, vocabulary_size)
    inputs = token_input(name, input_shape, (1014,), min_length=_char_min_length())
    if one_hot:
        # A fixed identity matrix: each character id becomes its one-hot vector.
        embed = layers.Embedding(
            vocabulary_size,
            vocabulary_size,
            embeddings_initializer="identity",
            trainable=False,
            name="embedding",
        )
    else:
        embed = layers.Embedding(vocabulary_size, embedding_dim, name="embedding")
    x = embed(inputs)
    for k, (window, pool) in enumerate(_CHAR_LAYERS, start=1):
        x = layers.Conv1D(filters, window, activation="relu", name=f"conv{k}")(x)
        if pool:
            x = layers.MaxPooling1D(pool, name=f"pool{k}")(x)
    x = layers.Flatten(name="flatten")(x)
    for k in (1, 2):
        x = layers.Dense(dense, activation="relu", name=f"fc{k}")(x)
        x = layers.Dropout(dropout, name=f"dropout{k}")(x)
    outputs = predictions(x, classes, classifier_activation)
    return finish(inputs, outputs, name=name, weights=weights)
