"""Text classification, text as a 1D grid: one class per text.

The model takes raw strings: `keras.layers.TextVectorization` (adapted on the training split
only, its vocabulary saved with the model) turns them into token ids for a registered text
network (`textcnn`, `charcnn`). Targets, loss, metrics and export parity are the classifier's;
evaluation adds per-class precision, recall and F1, ROC AUC for two classes, `confusion.png`
and `errors.tsv` (the most confidently misclassified eval texts). TFLite and ONNX cannot take
strings with their builtin operators: those exports are the token-id network, with
`vocabulary.txt` and `vectorizer.json` beside it, and `zoo predict` vectorizes for them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from zoo import rundir
from zoo.errors import ZooError
from zoo.tasks import _common
from zoo.tasks import classification as _classification

INPUT = "texts"
TARGET = "labels"
MONITOR = "val_accuracy"
VALIDATE = True
ACTIVATION = "softmax"
OUTPUT_RANK = None  # a classifier's rank: the run (or vectorizer.json beside an export) tells
AGREEMENT = _classification.AGREEMENT
PARITY_EXAMPLES = None
TOLERANCE = dict(_classification.TOLERANCE)
ERRORS = "errors.tsv"
VOCABULARY = "vocabulary.txt"
VECTORIZER = "vectorizer.json"
# Most confidently misclassified eval texts listed in errors.tsv.
ERRORS_SHOWN = 100


class Head(BaseModel):
    """Text models are registered whole (model.name); there is no head over a backbone."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def check(recipe) -> None:
    from zoo import registry

    model = recipe.model
    if model.name is None or "text" not in registry.info(model.name)["tasks"]:
        raise ValueError(
            f"task 'text' trains a registered text model: set model.name to one of "
            f"{', '.join(registry.list_models(task='text'))} (not model.backbone)"
        )
    if recipe.augment:
        raise ValueError(
            "[[augment]] layers transform images; a text recipe trains without them (remove "
            "the [[augment]] tables)"
        )
    for key in ("image_size", "crop_size", "eval_identities", "mask_values"):
        if getattr(recipe.data, key) is not None:
            raise ValueError(f"data.{key} is for images; a text recipe leaves it out")
    if "vocabulary_size" in model.args:
        raise ValueError(
            "model.args.vocabulary_size comes from the vectorizer's vocabulary; set "
            "data.max_tokens instead"
        )
    if recipe.runtime.backend not in ("auto", "tensorflow"):
        raise ValueError(
            "text models turn strings into tokens inside the model with TensorFlow ops: "
            f"runtime.backend {recipe.runtime.backend!r} cannot run them; leave it out"
        )
    if recipe.data.tokens == "character" and recipe.data.ngrams:
        raise ValueError("data.ngrams combines words; leave it out for data.tokens = 'character'")
    _classification.check(recipe)


def vectorizer(recipe, data=None):
    """The recipe's TextVectorization, adapted on the training texts of `data` where given."""
    import keras

    from zoo.layers import split_punctuation_zero_digits

    cfg = recipe.data
    standardize = {
        "none": None,
        "lower_split_punctuation_zero_digits": split_punctuation_zero_digits,
    }.get(cfg.standardize, cfg.standardize)
    layer = keras.layers.TextVectorization(
        max_tokens=cfg.max_tokens,
        standardize=standardize,
        split="character" if cfg.tokens == "character" else "whitespace",
        ngrams=cfg.ngrams,
        output_mode="int",
        output_sequence_length=cfg.sequence_length,
        name="vectorize",
    )
    if data is not None and data.train_examples is not None:
        layer.adapt(data.train_examples.map(lambda e: e["texts"]).batch(1024))
    return layer


def model_input(recipe, data=None):
    """Strings in; the vectorizer (adapted on the training split) makes the net's token ids."""
    import keras

    layer = vectorizer(recipe, data)
    inputs = keras.Input(shape=(), dtype="string", name="text")
    return inputs, [layer], (recipe.data.sequence_length,)


def net(recipe, shape, classes: int, activation, preprocessing):
    """The registered text model over the vectorizer's vocabulary; `model.args.embeddings`
    (a word-vector text file, GloVe's format) initialises its embedding."""
    args = _common.model_args(recipe)
    layer = preprocessing[0]
    adapted = layer.vocabulary_size() > 2  # the padding and OOV tokens alone: not adapted
    args["vocabulary_size"] = layer.vocabulary_size() if adapted else recipe.data.max_tokens
    vectors = None
    embeddings = args.pop("embeddings", None)
    if embeddings is not None:
        if not adapted:
            raise ZooError("model.args.embeddings needs the vectorizer adapted on training data")
        vectors = read_vectors(embeddings, layer.get_vocabulary(), seed=recipe.runtime.seed)
        args["embedding_dim"] = vectors.shape[1]
    model = _common.registered(recipe, shape, classes, activation, args)
    if vectors is not None:
        model.get_layer("embedding").set_weights([vectors])
    return model


def read_vectors(path, vocabulary: list[str], seed: int = 0) -> np.ndarray:
    """An embedding matrix for `vocabulary` from a word-vector file (a word then its numbers on
    each line, as GloVe's .txt and word2vec's text format): words the file lacks get small
    random vectors (Kim 2014: U[-0.25, 0.25]), padding zeros."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ZooError(
            f"model.args.embeddings {str(path)!r} is not a file; give a word-vector text file "
            "such as glove.6B.100d.txt"
        )
    index = {w: k for k, w in enumerate(vocabulary)}
    found, dim = {}, None
    with file.open(encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            parts = line.rstrip().split(" ")
            if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec's "count dimension" header
            if dim is None:
                dim = len(parts) - 1
            if len(parts) - 1 != dim or dim < 1:
                raise ZooError(
                    f"{file}, line {number}: {len(parts) - 1} numbers after the word, "
                    f"expected {dim}; each line should be a word and its vector"
                )
            if parts[0] in index:
                try:
                    found[index[parts[0]]] = np.asarray(parts[1:], dtype=np.float32)
                except ValueError:
                    raise ZooError(f"{file}, line {number}: the vector is not numbers") from None
    if dim is None:
        raise ZooError(f"{file} holds no word vectors")
    rng = np.random.default_rng(seed)
    matrix = rng.uniform(-0.25, 0.25, (len(vocabulary), dim)).astype(np.float32)
    matrix[0] = 0.0
    for k, vector in found.items():
        matrix[k] = vector
    return matrix


trainer = _classification.trainer
encode = _classification.encode
finish = _common.finish
summary = _common.summary
loss = _classification.loss
metrics = _classification.metrics
parity = _classification.parity
describe_parity = _classification.describe_parity


def evaluate(model, data, run, recipe) -> dict:
    """Loss and the Keras metrics, the class report (per-class and macro precision, recall, F1;
    ROC AUC for two classes), `confusion.png` and `errors.tsv`."""
    metrics, texts, labels, probabilities = _common.classify(model, data, run, keep_inputs=True)
    if run is not None:
        write_errors(Path(run) / ERRORS, texts, labels, probabilities, data.class_names)
    return metrics


def write_errors(path: Path, texts, labels, probabilities, names) -> None:
    """The misclassified texts, most confident first: confidence, true, predicted, text."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")]
    lines = ["confidence\ttrue\tpredicted\ttext"]
    for k in wrong[:ERRORS_SHOWN]:
        text = " ".join(texts[k].split())  # one line, tabs and newlines as spaces
        confidence = probabilities[k, predicted[k]]
        lines.append(f"{confidence:.4f}\t{names[labels[k]]}\t{names[predicted[k]]}\t{text}")
    rundir.write_text(path, "\n".join(lines) + "\n")


def serving(model, format: str, input_dtype: str = "float32", any_size: bool = False):
    """(the model to convert, a function from eval texts to its inputs, {file: text} written
    beside the export). SavedModel keeps the vectorizer and takes strings; TFLite and ONNX get
    the token-id network, and the vocabulary and vectorizer settings beside it."""
    if input_dtype != "float32" or any_size:
        raise ZooError(
            "--input-dtype and --any-size are for image models; a text model takes strings "
            "(SavedModel) or token ids (TFLite, ONNX)"
        )
    if format == "savedmodel":
        return model, (lambda texts: texts), {}
    import keras

    layer = _vectorize_layer(model)
    net = next(x for x in model.layers if isinstance(x, keras.Model))
    ids = keras.Input(
        shape=(layer.get_config()["output_sequence_length"],), dtype="int32", name="tokens"
    )
    tokens = keras.Model(ids, net(ids), name=model.name)
    settings = vectorizer_settings(layer)

    def feed(texts):
        return token_ids(layer, texts)

    vocabulary = settings["vocabulary"]
    files = {
        VOCABULARY: "\n".join(vocabulary) + "\n",
        VECTORIZER: json.dumps(settings, indent=1, ensure_ascii=False) + "\n",
    }
    if any("\n" in t for t in vocabulary):
        files.pop(VOCABULARY)  # one token per line cannot hold "\n": vectorizer.json has them
    return tokens, feed, files


def _vectorize_layer(model):
    import keras

    found = [x for x in model.layers if isinstance(x, keras.layers.TextVectorization)]
    if not found:
        raise ZooError(f"{model.name} has no TextVectorization layer; is it a text model?")
    return found[0]


def vectorizer_settings(layer) -> dict:
    """What rebuilds `layer` outside the model: its settings and vocabulary."""
    import keras

    config = layer.get_config()
    keep = ("max_tokens", "standardize", "split", "ngrams", "output_mode", "output_sequence_length")
    if callable(config["standardize"]):  # zoo's own, registered: by its serialized name
        config["standardize"] = keras.saving.serialize_keras_object(config["standardize"])
    return {
        **{k: config[k] for k in keep},
        "vocabulary": [str(t) for t in layer.get_vocabulary()],
    }


def load_vectorizer(path: Path):
    """A function from texts to int32 token ids, from a vectorizer.json written by export."""
    import keras

    try:
        settings = json.loads(Path(path).read_text(encoding="utf-8"))
        vocabulary = settings.pop("vocabulary")
        if isinstance(settings.get("standardize"), dict):
            import zoo.layers  # noqa: F401  (registers zoo's standardization)

            settings["standardize"] = keras.saving.deserialize_keras_object(settings["standardize"])
        layer = keras.layers.TextVectorization(**settings)
        # The padding "" and OOV tokens are the layer's own; the rest is the vocabulary.
        layer.set_vocabulary(vocabulary[2:])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ZooError(f"cannot read the vectorizer {path}: {e}") from None
    return lambda texts: token_ids(layer, texts)


def token_ids(layer, texts) -> np.ndarray:
    """The int32 token ids `layer` (a TextVectorization) gives a sequence of texts."""
    import tensorflow as tf

    strings = tf.convert_to_tensor(np.asarray(texts, dtype=object), dtype=tf.string)
    return np.asarray(layer(strings), dtype=np.int32)


def present(texts, scores, class_names, *, top_k: int = 5, **_) -> list[dict]:
    """Top-k classes with names and scores for each text."""
    out = _classification.present(texts, scores, class_names, top_k=top_k)
    return [{"task": "text", "text": r["image"], "top": r["top"]} for r in out]


def describe(result: dict) -> list[str]:
    text = result["text"] if len(result["text"]) <= 70 else result["text"][:67] + "..."
    return [repr(text)] + [f"  {e['score']:.4f}  {e['name']}" for e in result["top"]]
