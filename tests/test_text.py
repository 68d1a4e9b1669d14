"""Text as a 1D grid: the text_file and text_folder sources, the vectorizer inside the model
(adapted on the training split only), TextCNN and the character CNN, a real SMS Spam run with
its evaluation files, predictions from raw strings and exports with their vocabulary."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import zoo
from tests.conftest import shared_data
from tests.test_export import zoo_cli
from zoo.data import build
from zoo.errors import ZooError
from zoo.recipes import load_recipe
from zoo.training import build_model

SPAM = "WINNER!! You have won a FREE prize of 1000 cash. Call 09061701461 now to claim, T&C apply"
HAM = "Ok see you at 6 then, I will bring the book"


def write_tsv(path, rows):
    path.write_text("".join(f"{label}\t{t}\n" for label, t in rows), encoding="utf-8")
    return path


def text_recipe(path, *overrides, name="textcnn_sms_spam"):
    return load_recipe(name, [f"data.path='{path}'", "fit.verbose=0", *overrides])


def texts_of(dataset) -> list[str]:
    return [t.decode() for x, _ in dataset for t in x.numpy()]


# ---------------------------------------------------------------------------------------------
# Sources


def test_text_file_reads_a_headerless_tsv_and_splits_it_stratified(tmp_path):
    rows = [("ham", f"hello number {k}") for k in range(40)] + [
        ("spam", f'"free" prize {k}') for k in range(10)
    ]
    write_tsv(tmp_path / "messages.tsv", rows)
    data = build(text_recipe(tmp_path, "data.validation_split=0.2", "data.batch_size=8"))
    assert data.class_names == ["ham", "spam"]
    assert (data.train_count, data.eval_count) == (40, 10)
    labels = np.concatenate([y.numpy() for _, y in data.eval])
    assert np.bincount(labels).tolist() == [8, 2]  # stratified: 20% of each class
    # Quotes are text in a TSV (an SMS may start with one), kept as written.
    everything = texts_of(data.eval) + texts_of(data.train)
    assert sorted(everything) == sorted(t for _, t in rows)


def test_text_file_keeps_odd_characters_inside_a_text(tmp_path):
    rows = [("ham", f"page\x0cbreak and\u2028line {k}") for k in range(4)] + [
        ("spam", f"prize \x1e{k}") for k in range(4)
    ]
    path = write_tsv(tmp_path / "m.tsv", rows)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # a UTF-8 byte order mark
    data = build(text_recipe(path, "data.validation_split=0.5"))
    assert data.class_names == ["ham", "spam"]  # not "\ufeffham"
    assert sorted(texts_of(data.train) + texts_of(data.eval)) == sorted(t for _, t in rows)


def test_text_file_with_a_header_and_named_columns(tmp_path):
    lines = ["id,category,body"] + [
        f'{k},{"b" if k % 3 else "a"},"text, with comma {k}"' for k in range(30)
    ]
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "test.csv").write_text('id,category,body\n1,a,"first"\n2,b,second\n')
    data = build(text_recipe(tmp_path, "data.label_column='category'", "data.text_column='body'"))
    assert data.class_names == ["a", "b"] and data.eval_name == "test"
    assert (data.train_count, data.eval_count) == (30, 2)
    assert sorted(texts_of(data.eval)) == ["first", "second"]
    assert "text, with comma 1" in texts_of(data.train)


def test_text_file_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_bytes(b"ham\tfine\nspam\tcaf\xe9 latin-1\nham\tok\nspam\tprize\n")
    with pytest.raises(ZooError, match=r"bad.tsv, line 2, column 9: byte 0xe9 is not utf-8"):
        build(text_recipe(path))
    data = build(text_recipe(path, "data.encoding='latin-1'", "data.validation_split=0.5"))
    assert "café latin-1" in texts_of(data.train) + texts_of(data.eval)
    path.write_text("ham\tfine\nspam only one column\n")
    with pytest.raises(ZooError, match=r"bad.tsv, line 2: 1 column\(s\)"):
        build(text_recipe(path))
    with pytest.raises(ZooError, match="'body' names a column but .* without a header"):
        build(text_recipe(path, "data.text_column='body'", "data.header=false"))
    (tmp_path / "other.csv").write_text("x\n")
    with pytest.raises(
        ZooError, match="exactly one .tsv/.csv/.txt file; it holds bad.tsv, other.csv"
    ):
        build(text_recipe(tmp_path))
    write_tsv(path, [("ham", "a"), ("ham", "b")])
    with pytest.raises(ZooError, match="one label only"):
        build(text_recipe(path))


def test_text_folder_reads_class_folders_and_the_test_split(tmp_path):
    for split, count in (("train", 6), ("test", 2)):
        for label in ("neg", "pos"):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for k in range(count):
                (folder / f"{k}.txt").write_text(f"{label} review {k}\nsecond line")
    recipe = text_recipe(tmp_path, "data.source='text_folder'")
    data = build(recipe)
    assert data.class_names == ["neg", "pos"] and data.eval_name == "test"
    assert (data.train_count, data.eval_count) == (12, 4)
    assert "pos review 1\nsecond line" in texts_of(data.eval)
    with pytest.raises(ZooError, match="data.classes lists 'neg' more than once"):
        build(text_recipe(tmp_path, "data.source='text_folder'", "data.classes=['neg', 'neg']"))


@pytest.mark.parametrize("name, classes", [("imdb_reviews", 2), ("ag_news_subset", 4)])
def test_tfds_text_datasets(mock_tfds, name, classes):
    recipe = load_recipe(
        "textcnn_imdb", [f"data.name='{name}'", "data.batch_size=5", "data.sequence_length=8"]
    )
    with mock_tfds(num_examples=10):
        data = build(recipe)
        x, y = next(iter(data.eval))
        model = build_model(recipe, classes, data=data)
    assert len(data.class_names) == classes and data.eval_name == "test"
    assert x.dtype.name == "string" and x.shape == (5,) and y.numpy().max() < classes
    assert model.predict(np.asarray(["any text"], object), verbose=0).shape == (1, classes)
    with pytest.raises(ZooError, match="'body' is not a Text feature"):
        with mock_tfds(num_examples=10):
            build(load_recipe("textcnn_imdb", [f"data.name='{name}'", "data.text_column='body'"]))


def test_text_recipes_refuse_image_keys_and_image_sources(tmp_path):
    with pytest.raises(ValueError, match=r"\[\[augment\]\] layers transform images"):
        text_recipe(tmp_path, "augment=[{layer='RandomFlip'}]")
    with pytest.raises(ValueError, match="data.image_size is for images"):
        text_recipe(tmp_path, "data.image_size=[8, 8]")
    with pytest.raises(ValueError, match="set model.name to one of charcnn, textcnn"):
        text_recipe(tmp_path, "model={name='lenet5'}")
    with pytest.raises(ValueError, match="gives images, task 'text' takes texts"):
        load_recipe("textcnn_sms_spam", ["data.source='digits'", "data.image_size=[8, 8]"])
    with pytest.raises(ValueError, match="gives texts, task 'classification' takes images"):
        load_recipe("lenet_digits", ["data.source='text_file'", f"data.path='{tmp_path}'"])


# ---------------------------------------------------------------------------------------------
# The vectorizer and the models


def test_the_vectorizer_is_adapted_on_the_training_split_only(tmp_path):
    train = [("ham", "see you soon") for _ in range(8)] + [
        ("spam", "win cash now") for _ in range(8)
    ]
    write_tsv(tmp_path / "train.tsv", train)
    write_tsv(tmp_path / "test.tsv", [("ham", "zebra soon"), ("spam", "win zebra")])
    recipe = text_recipe(tmp_path, "data.sequence_length=6")
    data = build(recipe)
    model = build_model(recipe, 2, data=data)
    layer = model.get_layer("vectorize")
    vocabulary = layer.get_vocabulary()
    assert "zebra" not in vocabulary and {"see", "win", "cash"} <= set(vocabulary)
    ids = np.asarray(layer(np.array(["zebra soon"], dtype=object)))
    assert ids.tolist() == [[1, vocabulary.index("soon"), 0, 0, 0, 0]]  # 1: out of vocabulary
    # The net's embedding has one row per vocabulary entry.
    assert model.get_layer("textcnn").get_layer("embedding").input_dim == len(vocabulary)


def test_zoo_standardization_splits_punctuation_and_zeroes_digits(tmp_path):
    from zoo.tasks import text

    train = [("ham", "see you at home/work soon") for _ in range(8)] + [
        ("spam", "Call 09061701461 NOW!! T&C's £1.50") for _ in range(8)
    ]
    write_tsv(tmp_path / "train.tsv", train)
    write_tsv(tmp_path / "test.tsv", [("ham", "home soon"), ("spam", "call 08712460324")])
    recipe = text_recipe(
        tmp_path, "data.sequence_length=8", "data.standardize='lower_split_punctuation_zero_digits'"
    )
    data = build(recipe)
    layer = build_model(recipe, 2, data=data).get_layer("vectorize")
    vocabulary = layer.get_vocabulary()
    # Keras' strip would give "homework", "09061701461", "tcs", "£150".
    assert {"home", "work", "00000000000", "t", "c", "s", "£0", "00"} <= set(vocabulary)
    assert not any(c.isdigit() and c != "0" for token in vocabulary for c in token)
    strings = np.array(["CALL 08712460324", "home/work"], dtype=object)
    ids = np.asarray(layer(strings))
    assert ids[0, :2].tolist() == [vocabulary.index("call"), vocabulary.index("00000000000")]
    assert ids[1, :2].tolist() == [vocabulary.index("home"), vocabulary.index("work")]
    # It travels with the model (safe mode) and with the vectorizer an export writes.
    inputs = keras.Input(shape=(), dtype="string")
    keras.Model(inputs, layer(inputs)).save(tmp_path / "v.keras")
    again = keras.saving.load_model(tmp_path / "v.keras", safe_mode=True)
    np.testing.assert_array_equal(np.asarray(again(strings)), ids)
    settings = text.vectorizer_settings(layer)
    (tmp_path / "vectorizer.json").write_text(json.dumps(settings))
    np.testing.assert_array_equal(text.load_vectorizer(tmp_path / "vectorizer.json")(strings), ids)


@pytest.mark.parametrize("name", zoo.list_models(task="text"))
def test_every_text_model_trains_a_step_and_round_trips(name, tmp_path):
    length = 128 if name == "charcnn" else 16
    model = zoo.get(name, input_shape=(length,), classes=3, vocabulary_size=50)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 50, (6, length)).astype("int32")
    y = rng.integers(0, 3, 6)
    model.compile("adam", "sparse_categorical_crossentropy")
    before = model.get_weights()
    model.fit(x, y, epochs=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    with pytest.raises(ZooError, match="input_shape must be"):
        zoo.get(name, input_shape=(2,))


def test_textcnn_keeps_the_papers_max_norm_and_windows():
    model = zoo.get("textcnn", input_shape=(20,), vocabulary_size=30)
    assert [model.get_layer(f"conv{w}").kernel.shape for w in (3, 4, 5)] == [
        (w, 128, 100) for w in (3, 4, 5)
    ]
    dense = model.get_layer("predictions")
    assert dense.kernel_constraint.get_config()["max_value"] == 3.0
    big = keras.ops.ones(dense.kernel.shape) * 10
    norms = np.linalg.norm(keras.ops.convert_to_numpy(dense.kernel_constraint(big)), axis=0)
    np.testing.assert_allclose(norms, 3.0, rtol=1e-5)


def test_pretrained_word_vectors_fill_the_embedding(tmp_path):
    rows = [("ham", "good morning friend")] * 6 + [("spam", "free cash prize")] * 6
    write_tsv(tmp_path / "m.tsv", rows)
    glove = tmp_path / "vectors.txt"
    glove.write_text("free 1 2 3\nfriend -1 0.5 0\nunused 9 9 9\n")
    recipe = text_recipe(
        tmp_path / "m.tsv", f"model.args={{embeddings='{glove}', trainable_embeddings=false}}"
    )
    data = build(recipe)
    model = build_model(recipe, 2, data=data)
    vocabulary = model.get_layer("vectorize").get_vocabulary()
    table = model.get_layer("textcnn").get_layer("embedding").get_weights()[0]
    assert table.shape == (len(vocabulary), 3)
    np.testing.assert_array_equal(table[vocabulary.index("free")], [1, 2, 3])
    np.testing.assert_array_equal(table[vocabulary.index("friend")], [-1, 0.5, 0])
    assert np.abs(table[vocabulary.index("cash")]).max() <= 0.25  # not in the file: random
    assert not model.get_layer("textcnn").get_layer("embedding").trainable
    glove.write_text("free 1 2 3\nfriend 1 2\n")
    with pytest.raises(ZooError, match="vectors.txt, line 2: 2 numbers after the word, expected 3"):
        build_model(recipe, 2, data=data)


def test_class_report_against_hand_computed_values():
    from zoo.evaluation import class_report

    labels = [0, 0, 0, 1, 1]
    probabilities = [[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8], [0.55, 0.45]]
    report, matrix = class_report(labels, probabilities, ["ham", "Spam Now"])
    assert matrix.tolist() == [[2, 1], [1, 1]]
    assert report["accuracy"] == pytest.approx(3 / 5)
    assert report["precision_ham"] == pytest.approx(2 / 3)
    assert report["recall_spam_now"] == pytest.approx(1 / 2)
    assert report["f1_spam_now"] == pytest.approx(2 * 0.5 * 0.5 / (0.5 + 0.5))
    assert report["macro_f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    # ROC AUC of the second class's score: 5 of 6 (positive, negative) pairs ranked right.
    assert report["roc_auc"] == pytest.approx(5 / 6)
    assert report["support_ham"] == 3 and report["support_spam_now"] == 2


# ---------------------------------------------------------------------------------------------
# A real run on the SMS Spam Collection


@pytest.fixture(scope="module")
def sms_run(tmp_path_factory):
    """TextCNN trained for one epoch on the SMS Spam Collection, a stratified 20% held out."""
    path = shared_data("text")
    recipe = text_recipe(path, "fit.epochs=1", "data.sequence_length=48")
    out = tmp_path_factory.mktemp("text") / "run"
    return zoo.train(recipe, output=out, log=lambda *a, **k: None)


def test_sms_run_beats_the_majority_class_and_writes_its_report(sms_run):
    metrics = json.loads((sms_run / "metrics.json").read_text())
    assert metrics["eval_examples"] == 1115 and metrics["classes"] == ["ham", "spam"]
    assert metrics["accuracy"] >= 0.95  # the majority class (ham) is 0.866
    assert metrics["f1_spam"] > 0.75 and metrics["roc_auc"] > 0.95
    assert metrics["support_ham"] + metrics["support_spam"] == 1115
    matrix = np.asarray(metrics["confusion_matrix"])
    assert matrix.sum() == 1115 and matrix.trace() / 1115 == pytest.approx(metrics["accuracy"])
    assert (sms_run / "confusion.png").stat().st_size > 1000
    rows = (sms_run / "errors.tsv").read_text().splitlines()
    assert rows[0] == "confidence\ttrue\tpredicted\ttext"
    assert len(rows) - 1 == matrix.sum() - matrix.trace()
    confidences = [float(r.split("\t")[0]) for r in rows[1:]]
    assert confidences == sorted(confidences, reverse=True)
    again = zoo.evaluate(sms_run)  # the saved model on the same split: the same result
    assert again["accuracy"] == pytest.approx(metrics["accuracy"])
    assert again["confusion_matrix"] == metrics["confusion_matrix"]


def test_a_saved_text_model_takes_raw_strings_in_safe_mode(sms_run):
    model = keras.saving.load_model(sms_run / "model.keras", safe_mode=True)
    scores = model.predict(np.array([SPAM, HAM], dtype=object), verbose=0)
    assert scores.argmax(1).tolist() == [1, 0]


def test_zoo_predict_labels_texts_and_a_file_of_texts(sms_run, tmp_path):
    code, out, err = zoo_cli("predict", str(sms_run), SPAM, HAM, "-k", "1", "--json")
    assert code == 0, err
    results = json.loads(out)
    assert [r["top"][0]["name"] for r in results] == ["spam", "ham"]
    assert results[0]["task"] == "text" and results[1]["text"] == HAM
    lines = tmp_path / "texts.txt"
    lines.write_text(f"{HAM}\n\n{SPAM}\n")
    code, out, err = zoo_cli("predict", str(sms_run), "--file", str(lines), "-k", "1")
    assert code == 0, err
    assert [line.split()[-1] for line in out.splitlines() if line.startswith("  ")] == [
        "ham",
        "spam",
    ]
    code, _, err = zoo_cli("predict", str(sms_run))
    assert code == 2 and "give what to predict" in err


def test_text_exports_agree_and_predict_from_strings(sms_run):
    saved = zoo.export(sms_run, format="savedmodel")
    assert saved["top1_agreement"] == 1.0 and saved["examples"] == 1115
    lite = zoo.export(sms_run, format="tflite", quantize="int8")
    assert lite["top1_agreement"] >= 0.98
    folder = sms_run / "export"
    vocabulary = (folder / "vocabulary.txt").read_text().split("\n")[:-1]
    settings = json.loads((folder / "vectorizer.json").read_text())
    assert vocabulary == settings["vocabulary"] and vocabulary[:2] == ["", "[UNK]"]
    assert settings["output_sequence_length"] == 48
    for artifact in ("model_savedmodel", "model_int8.tflite"):
        results = zoo.predict(folder / artifact, [SPAM, HAM], top_k=1)
        assert [r["top"][0]["name"] for r in results] == ["spam", "ham"], artifact
    with pytest.raises(ZooError, match="--input-dtype and --any-size are for image models"):
        zoo.export(sms_run, format="tflite", input_dtype="uint8")


def test_text_onnx_export_agrees(sms_run):
    report = zoo.export(sms_run, format="onnx")
    assert report["top1_agreement"] >= 0.99
    results = zoo.predict(sms_run / "export" / "model.onnx", [SPAM, HAM], top_k=1)
    assert [r["top"][0]["name"] for r in results] == ["spam", "ham"]


@pytest.mark.slow
def test_bench_times_a_text_run_and_its_exports(sms_run):
    from zoo.bench import EXPORTS, bench_exports

    rows = bench_exports(sms_run, repeats=2, warmup=1, batches=(1, 4))
    assert [r["model"] for r in rows] == ["Keras", *(label for label, _, _ in EXPORTS)]
    assert all(r["batch4_ms"] > 0 and r["size_bytes"] > 0 for r in rows)
