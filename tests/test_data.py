"""Data sources and the pipeline, on small data written by the tests and on TFDS mock data."""

import gzip
import json
import struct
import time

import numpy as np
import pytest
from PIL import Image

from zoo.data import build
from zoo.data import idx as arrays
from zoo.errors import ZooError
from zoo.recipes import load_recipe


def write_idx(path, array, gz):
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    data = header + array.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


@pytest.fixture
def idx_folder(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n, gz in (("train", 60, True), ("t10k", 20, False)):
        labels = np.arange(n, dtype=np.uint8) % 3
        images = (rng.uniform(0, 50, (n, 28, 28)) + labels[:, None, None] * 60).astype(np.uint8)
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", labels, gz)
    return tmp_path


def recipe(**data):
    def toml(v):
        return repr(v) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else v

    overrides = [f"data.{k}={toml(v)}" for k, v in data.items()]
    return load_recipe("lenet_digits", overrides)


def first_batch(ds):
    x, y = next(iter(ds))
    return x.numpy(), y.numpy()


def test_read_idx_gz_and_plain(idx_folder):
    images = arrays.read_idx(idx_folder / "train-images-idx3-ubyte.gz")
    labels = arrays.read_idx(idx_folder / "t10k-labels-idx1-ubyte")
    assert images.shape == (60, 28, 28) and images.dtype == np.uint8
    assert labels.tolist() == [i % 3 for i in range(20)]


def test_read_idx_rejects_other_files(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"\x89PNG....")
    with pytest.raises(ZooError, match="not an IDX file"):
        arrays.read_idx(path)


def test_idx_source_uses_t10k_as_eval(idx_folder):
    data = build(recipe(source="idx", path=str(idx_folder), image_size=[28, 28], batch_size=8))
    assert (data.train_count, data.eval_count, data.eval_name) == (60, 20, "test")
    assert data.class_names == ["0", "1", "2"]
    assert data.steps_per_epoch == 8
    x, y = first_batch(data.eval)
    assert x.shape == (8, 28, 28, 1) and x.dtype == np.float32
    assert y.tolist() == [0, 1, 2, 0, 1, 2, 0, 1]  # eval keeps file order
    assert 0 <= x.min() and x.max() <= 255


def test_idx_classes_subset_and_max_per_class(idx_folder):
    data = build(
        recipe(
            source="idx",
            path=str(idx_folder),
            image_size=[28, 28],
            classes=["2", "0"],
            max_per_class=5,
            batch_size=100,
        )
    )
    assert data.class_names == ["2", "0"]
    assert data.train_count == 10 and data.eval_count == 10
    x, y = first_batch(data.eval)
    assert sorted(y.tolist()) == [0] * 5 + [1] * 5
    # Relabelled: new class 0 is old class "2", the brightest images.
    assert x[y == 0].mean() > x[y == 1].mean() + 60


def test_missing_idx_folder():
    with pytest.raises(ZooError, match="is not a folder"):
        build(recipe(source="idx", path="/no/such/mnist"))


def test_idx_folder_without_train_files(tmp_path):
    with pytest.raises(ZooError, match="has no train-images-idx3-ubyte"):
        build(recipe(source="idx", path=str(tmp_path)))


def test_digits_is_stratified_and_deterministic():
    a = build(recipe(batch_size=2000))
    b = build(recipe(batch_size=2000))
    assert (a.train_count, a.eval_count) == (1437, 360)
    _, ya = first_batch(a.eval)
    _, yb = first_batch(b.eval)
    assert ya.tolist() == yb.tolist()
    assert np.bincount(ya).min() >= 35  # every digit in the held-out split
    x, _ = first_batch(a.train)
    assert x.shape == (1437, 32, 32, 1)


def test_pipelines_do_not_autotune():
    # Dropping an autotuning iterator, as fit does after every epoch, stalls for seconds.
    data = build(recipe(batch_size=500))
    for ds in (data.train, data.eval, data.validation):
        assert ds.options().autotune.enabled is False
    x, y = first_batch(data.train)
    assert x.shape == (500, 32, 32, 1) and y.shape == (500,)


def make_folder(root, split, classes, n, size=(20, 24), ext="png", mode="RGB"):
    for c, name in enumerate(classes):
        d = root / split / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            value = 40 * c + i
            Image.new(mode, size, color=value if mode == "L" else (value, 0, 0)).save(
                d / f"{i:03d}.{ext}"
            )


def test_image_folder_with_test_split(tmp_path):
    make_folder(tmp_path, "train", ["cat", "dog", "emu"], 6)
    make_folder(tmp_path, "test", ["cat", "dog", "emu"], 2, ext="jpg")
    data = build(
        recipe(
            source="image_folder",
            path=str(tmp_path),
            image_size=[16, 16],
            channels=3,
            batch_size=50,
        )
    )
    assert data.class_names == ["cat", "dog", "emu"]
    assert (data.train_count, data.eval_count, data.eval_name) == (18, 6, "test")
    x, y = first_batch(data.eval)
    assert x.shape == (6, 16, 16, 3)
    assert y.tolist() == [0, 0, 1, 1, 2, 2]
    assert abs(x[y == 2][..., 0].mean() - 80.5) < 3  # JPEG, resized: close to the red value


def test_image_folder_validation_split_classes_and_pgm(tmp_path):
    make_folder(tmp_path, "train", ["s1", "s2", "s3"], 10, ext="pgm", mode="L")
    data = build(
        recipe(
            source="image_folder",
            path=str(tmp_path),
            image_size=[8, 8],
            channels=3,
            validation_split=0.2,
            classes=["s3", "s1"],
            max_per_class=5,
            batch_size=50,
        )
    )
    assert data.class_names == ["s3", "s1"]
    assert (data.train_count, data.eval_count) == (8, 2)
    x, y = first_batch(data.eval)
    assert sorted(y.tolist()) == [0, 1]
    assert x.shape == (2, 8, 8, 3)
    np.testing.assert_allclose(x[..., 0], x[..., 1])  # grey to RGB
    assert x[y == 0].mean() >= 80  # class s3: values 80..84


@pytest.mark.parametrize("size", [[40, 30], [128, 96]])  # shrunk 3x, and enlarged
def test_training_pixels_are_the_pixels_zoo_predict_reads(tmp_path, size):
    """Train and eval images are resized as `zoo predict`, `zoo verify` and `zoo embed`
    resize a file (Pillow's bilinear, antialiased when shrinking): one grey level apart at
    most, also for detail finer than the new size (thin stripes a plain bilinear resize turns
    into aliasing)."""
    from zoo.predict import read_image

    rng = np.random.default_rng(3)
    stripes = np.indices((120, 90)).sum(0) % 3 == 0
    for name in ("a", "b"):
        folder = tmp_path / "train" / name
        folder.mkdir(parents=True)
        for i in range(4):
            pixels = np.where(stripes, 230, 20) + rng.integers(0, 20, (120, 90))
            Image.fromarray(pixels.astype(np.uint8), "L").save(folder / f"{i}.png")
    data = build(
        recipe(
            source="image_folder",
            path=str(tmp_path),
            image_size=size,
            channels=1,
            validation_split=0.5,
            batch_size=8,
        )
    )
    x, y = first_batch(data.eval)
    files = sorted((tmp_path / "train").glob("*/*.png"))
    read = np.stack([read_image(f, (*size, 1)) for f in files])
    for image in x:  # each eval image is one of the files, read as zoo predict reads it
        assert np.abs(read - image).max(axis=(1, 2, 3)).min() <= 1


@pytest.mark.parametrize(
    "options, message",
    [
        ({"max_per_class": 1}, "class 's1', 's2' has fewer than 2 examples: data.validation"),
        ({"validation_split": 0.05}, "holds out 1, leaving 19: each side needs at least one"),
        ({"classes": ["s2"]}, r"the data has 1 class \('s2'\); telling classes apart takes"),
    ],
)
def test_splits_and_classes_a_classifier_cannot_use(tmp_path, options, message):
    make_folder(tmp_path, "train", ["s1", "s2"], 10)
    cfg = {"source": "image_folder", "path": str(tmp_path), "image_size": [8, 8]}
    with pytest.raises(ZooError, match=message):
        build(recipe(**{**cfg, "validation_split": 0.2, **options}))


@pytest.mark.parametrize("ext", ["png", "tif"])  # TensorFlow's decoder, and Pillow's
def test_rgba_palette_and_16_bit_images_convert_to_the_recipes_channels(tmp_path, ext):
    from PIL import Image

    folders = {k: tmp_path / "train" / k for k in ("rgba", "palette", "deep", "grey")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    for k in range(2):
        Image.new("RGBA", (4, 4), (200, 100, 50, 10)).save(folders["rgba"] / f"{k}.{ext}")
        palette = Image.new("P", (4, 4), 1)
        palette.putpalette([0, 0, 0, 30, 60, 90] + [0] * 762)
        palette.save(folders["palette"] / f"{k}.{ext}")
        # 16-bit grey at half of the range: 128 in 8 bits (Pillow's own conversion clips to 255)
        deep = Image.fromarray(np.full((4, 4), 32896, np.uint16))
        deep.save(folders["deep"] / f"{k}.{ext}")
        Image.new("L", (4, 4), 77).save(folders["grey"] / f"{k}.{ext}")

    def pixels(channels):
        data = build(
            recipe(
                source="image_folder",
                path=str(tmp_path),
                image_size=[4, 4],
                channels=channels,
                validation_split=0.5,
                batch_size=50,
            )
        )
        found = {}
        for ds in (data.train, data.eval):
            for x, y in ds:
                for image, label in zip(x.numpy(), y.numpy()):
                    found[data.class_names[label]] = image[0, 0].tolist()
        return found

    rgb = pixels(3)
    assert rgb["rgba"] == [200, 100, 50]  # alpha dropped, not the red channel spread
    assert rgb["palette"] == [30, 60, 90]
    assert rgb["deep"] == [128, 128, 128]
    assert rgb["grey"] == [77, 77, 77]
    grey = pixels(1)
    assert grey["rgba"][0] == pytest.approx(0.299 * 200 + 0.587 * 100 + 0.114 * 50, abs=1.5)
    assert grey["deep"] == [128] and grey["grey"] == [77]


def _corrupt_folder(root):
    """Ten good JPEGs and PNGs in two classes, and four bad files among them."""
    from PIL import Image

    for label in ("a", "b"):
        (root / "train" / label).mkdir(parents=True)
        for k in range(5):
            Image.new("RGB", (8, 8), (40 * k, 0, 0)).save(root / "train" / label / f"{k}.jpg")
    good = (root / "train" / "a" / "0.jpg").read_bytes()
    (root / "train" / "a" / "cut.jpg").write_bytes(good[: len(good) // 2])  # truncated
    (root / "train" / "b" / "empty.png").write_bytes(b"")
    (root / "train" / "b" / "notes.png").write_text("not an image")
    png = root / "train" / "b" / "cut.png"
    Image.new("L", (8, 8), 9).save(png)
    png.write_bytes(png.read_bytes()[:-12])  # the IEND chunk gone
    return root


@pytest.mark.parametrize("suffix", ["pgm", "ppm", "bmp", "tif", "webp"])
def test_images_cut_short_without_an_end_marker_are_found(tmp_path, suffix):
    from PIL import Image

    from zoo.data.common import image_problem

    path = tmp_path / f"face.{suffix}"
    noise = np.random.default_rng(0).integers(0, 256, (40, 30, 3), np.uint8)
    Image.fromarray(noise[..., 0] if suffix == "pgm" else noise).save(path)
    assert image_problem(str(path)) is None
    path.write_bytes(path.read_bytes()[:-200])
    problem = image_problem(str(path))  # WebP's header reader already refuses it
    assert problem.startswith("unreadable" if suffix == "webp" else "an image cut short")


def test_corrupt_images_are_named_before_training_or_skipped(tmp_path):
    root = _corrupt_folder(tmp_path)
    args = dict(source="image_folder", path=str(root), image_size=[8, 8], channels=3)
    with pytest.raises(ZooError) as e:
        build(recipe(**args, validation_split=0.2))
    message = str(e.value)
    assert message.startswith(f"{root}/train/a/cut.jpg: a") and "cut short" in message
    assert "and 3 more" in message and "data.skip_corrupt = true" in message
    data = build(recipe(**args, validation_split=0.2, skip_corrupt=True))
    assert data.train_count + data.eval_count == 10
    assert sorted(p.rsplit("/", 1)[1] for p in data.skipped) == [
        "cut.jpg",
        "cut.png",
        "empty.png",
        "notes.png",
    ]
    assert sum(len(x) for x, _ in data.train) == data.train_count  # every kept file decodes


def test_a_corrupt_image_stops_zoo_train_with_one_line_and_no_run_directory(tmp_path):
    from tests.test_export import zoo_cli

    root = _corrupt_folder(tmp_path / "data")
    out = tmp_path / "run"
    sets = [f"data.path='{root}'", "data.source='image_folder'", "data.channels=3"]
    args = [x for s in sets for x in ("--set", s)]
    code, _, err = zoo_cli("train", "lenet_digits", *args, "--output", str(out))
    assert code == 2 and err.startswith("error: ") and "cut.jpg: a" in err and "cut short" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    code, out_text, err = zoo_cli(
        "train",
        "lenet_digits",
        *args,
        "--set",
        "data.skip_corrupt=true",
        "--set",
        "fit.epochs=1",
        "--set",
        "fit.verbose=0",
        "--output",
        str(out),
    )
    assert code == 0, err
    assert "skipped 4 unreadable file(s)" in out_text
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["skipped_files"]) == 4


def test_image_folder_errors(tmp_path):
    make_folder(tmp_path, "train", ["a", "b"], 2)
    with pytest.raises(ZooError, match="'c', not found in .*available: a, b"):
        build(recipe(source="image_folder", path=str(tmp_path), classes=["a", "c"]))
    empty = tmp_path / "empty"
    (empty / "train" / "x").mkdir(parents=True)
    with pytest.raises(ZooError, match="no image files"):
        build(recipe(source="image_folder", path=str(empty)))
    with pytest.raises(ZooError, match="is not a folder"):
        build(recipe(source="image_folder", path=str(tmp_path / "nope")))


def test_augmentation_runs_on_train_only(tmp_path):
    r = load_recipe(
        "lenet_digits",
        [
            "augment=[{layer='RandomTranslation', height_factor=0.5, width_factor=0.5, "
            "fill_mode='constant'}]",
            "data.batch_size=2000",
            "data.shuffle=false",
        ],
    )
    data = build(r)
    plain = build(load_recipe("lenet_digits", ["data.batch_size=2000", "data.shuffle=false"]))
    xa, _ = first_batch(data.train)
    xp, _ = first_batch(plain.train)
    assert not np.allclose(xa, xp)
    np.testing.assert_array_equal(first_batch(data.eval)[0], first_batch(plain.eval)[0])


def test_label_smoothing_gives_one_hot_labels():
    data = build(load_recipe("lenet_digits", ["compile.label_smoothing=0.1"]))
    _, y = first_batch(data.train)
    assert y.shape == (32, 10)
    np.testing.assert_array_equal(y.sum(axis=1), 1)


def test_tfds_source_with_mock_data(mock_tfds):

    r = load_recipe("lenet_mnist", ["data.batch_size=10"])
    with mock_tfds(num_examples=30):
        data = build(r)
        assert data.class_names == [str(i) for i in range(10)]
        assert (data.train_count, data.eval_count, data.eval_name) == (30, 30, "test")
        x, y = first_batch(data.train)
        assert x.shape == (10, 28, 28, 1)
        assert y.dtype == np.int64 and y.max() < 10


def test_tfds_classes_subset_and_max_per_class(mock_tfds):
    r = load_recipe(
        "lenet_mnist", ["data.classes=['7', '2']", "data.max_per_class=4", "data.batch_size=100"]
    )
    with mock_tfds(num_examples=200):
        data = build(r)
        _, y = first_batch(data.train)
    assert data.class_names == ["7", "2"]
    assert data.train_count == len(y) == 8
    assert np.bincount(y).tolist() == [4, 4]


def test_tfds_split_names_carve_validation_from_train():
    from types import SimpleNamespace

    from zoo.data.tfds_source import split_names

    b = SimpleNamespace(info=SimpleNamespace(splits={"train": 1, "validation": 1}))
    assert split_names(b, "train", "validation", 0.1) == ("train", "validation", "validation")
    assert split_names(b, "train", "test", 0.2) == (
        "train[:80%]",
        "train[80%:]",
        "last 20% of train",
    )
    assert split_names(b, "train", None, 0.1)[:2] == ("train[:90%]", "train[90%:]")


def test_tfds_offline_fails_fast_with_a_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    r = load_recipe("lenet_mnist", [f"data.data_dir='{tmp_path}'"])
    start = time.monotonic()
    with pytest.raises(ZooError) as e:
        build(r)
    assert time.monotonic() - start < 30
    message = str(e.value)
    assert "'mnist' is not prepared" in message and "data.source=idx" in message


def test_tfds_unknown_dataset():
    with pytest.raises(ZooError, match="is not a TFDS dataset"):
        build(load_recipe("lenet_mnist", ["data.name='mnistt'"]))


def test_an_augmentation_layer_that_cannot_take_the_batches_names_itself():
    """Errors of an augmentation layer come out before training as the layer, the batch
    shapes and Keras' reason, not as TensorFlow's staging trace."""
    jitter = 'augment=[{layer="RandomFlip"}, {layer="RandomColorJitter", hue_factor=0.2}]'
    with pytest.raises(ZooError) as error:
        build(load_recipe("lenet_digits", [jitter]))
    message = str(error.value)
    assert message.startswith(
        "augment.1: RandomColorJitter cannot transform this recipe's batches "
        "(images (None, 32, 32, 1), labels (None,)): "
    )
    assert "\n" not in message and "Dimension must be 3" in message
    # Layers that only change colours refuse grey images when the recipe loads.
    with pytest.raises(ZooError, match=r"augment.0: RandomHue changes colours, .* are grey"):
        load_recipe("lenet_digits", ['augment=[{layer="RandomHue", factor=0.1}]'])


def test_random_grayscale_takes_the_images_and_leaves_the_labels():
    grey = 'augment=[{layer="RandomGrayscale", factor=1.0}]'
    x, y = next(iter(build(load_recipe("lenet_digits", [grey, "data.channels=3"])).train))
    x = x.numpy()
    assert x.shape[1:] == (32, 32, 3) and y.shape == (32,)
    np.testing.assert_allclose(x[..., 0], x[..., 2], atol=1e-3)
