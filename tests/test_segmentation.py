"""Segmentation: the segmentation_folder source, joint augmentation, decoders over backbones,
losses and metrics against hand-computed values, training on the real membrane data, export
parity and `zoo predict` masks."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

import zoo
from tests.conftest import TF_LOG_LINE, run_as_user, shared_data
from zoo import rundir
from zoo.data import build
from zoo.errors import ZooError
from zoo.export import runner
from zoo.recipes import load_recipe
from zoo.tasks import segmentation

QUIET = ["fit.verbose=0"]


def write_pairs(root, count, size=(32, 32), values=(0, 255), seed=0, image_format="png"):
    """`count` image/mask pairs whose image is its mask made visible (value 40 + 200 * id)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for k in range(count):
        ids = rng.integers(0, len(values), size)
        mask = np.asarray(values, np.uint8)[ids]
        image = (40 + 200 * (ids > 0)).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"{k:03d}.{image_format}")
        Image.fromarray(mask).save(root / "masks" / f"{k:03d}.png")
    return root


def seg_recipe(path, *overrides):
    return load_recipe(
        "unet_membrane_256",
        [
            f"data.path='{path}'",
            "data.images_dir='images'",
            "data.masks_dir='masks'",
            "data.image_size=[32, 32]",
            "data.batch_size=4",
            *overrides,
        ],
    )


def test_pairs_split_and_binary_masks(tmp_path):
    write_pairs(tmp_path / "train", 10)
    write_pairs(tmp_path / "test", 3, seed=1)
    data = build(seg_recipe(tmp_path, "data.mask_values={0=0, 255=1}"))
    assert (data.train_count, data.eval_count, data.eval_name) == (10, 3, "test")
    assert data.class_names == ["membrane", "cell"]
    x, y = next(iter(data.eval))
    assert x.shape == (3, 32, 32, 1) and y.shape == (3, 32, 32, 1)
    assert set(np.unique(y.numpy())) <= {0, 1}
    # The image shows its mask: 40 where the mask is 0, 240 where it is 255.
    np.testing.assert_array_equal(x.numpy() > 140, y.numpy() == 1)


def test_masks_resize_with_nearest_neighbours(tmp_path):
    write_pairs(tmp_path / "train", 2, size=(16, 16), values=(0, 100, 200), image_format="pgm")
    recipe = seg_recipe(
        tmp_path,
        "data.mask_values={0=0, 100=1, 200=2}",
        "data.classes=['a', 'b', 'c']",
        "data.validation_split=0.5",
        "data.shuffle=false",
    )
    data = build(recipe)
    _, y = next(iter(data.eval))
    original = np.asarray(Image.open(sorted((tmp_path / "train" / "masks").iterdir())[1]))
    # 16 -> 32: each mask pixel becomes a 2x2 block of its class id, none interpolated.
    expected = np.repeat(np.repeat(original // 100, 2, 0), 2, 1)
    np.testing.assert_array_equal(y.numpy()[0, ..., 0], expected)


def test_validation_split_by_file_and_default_binary(tmp_path):
    write_pairs(tmp_path, 10)  # images/ + masks/ at the top, no train/test
    recipe = seg_recipe(tmp_path, "data.validation_split=0.3", "data.classes=['bg', 'fg']")
    recipe = recipe.model_copy(
        update={"data": recipe.data.model_copy(update={"mask_values": None})}
    )
    data = build(recipe)
    assert (data.train_count, data.eval_count) == (7, 3)
    assert data.eval_name == "validation_split 0.3 of train"
    assert data.class_names == ["bg", "fg"]


def test_mask_values_map_any_encoding_and_unknown_values_name_the_file(tmp_path):
    write_pairs(tmp_path / "train", 4, values=(10, 20, 30))
    recipe = seg_recipe(
        tmp_path,
        "data.mask_values={10=2, 20=0, 30=1}",
        "data.classes=['a', 'b', 'c']",
        "data.validation_split=0.5",
    )
    x, y = next(iter(build(recipe).train))
    assert set(np.unique(y.numpy())) == {0, 1, 2}
    np.testing.assert_array_equal(x.numpy() > 140, y.numpy() != 2)  # 10 -> class 2 (dark)
    with pytest.raises(ZooError, match=r"mask .*000\.png has the value 30, which data.mask_values"):
        build(seg_recipe(tmp_path, "data.mask_values={10=0, 20=1}", "data.classes=['a', 'b']"))


def test_palette_masks_in_colour(tmp_path):
    root = tmp_path / "train"
    write_pairs(root, 4)
    for path in (root / "masks").iterdir():  # 0 -> black, 255 -> red
        grey = np.asarray(Image.open(path))
        Image.fromarray(np.stack([grey, 0 * grey, 0 * grey], -1)).save(path)
    recipe = seg_recipe(
        tmp_path, "data.mask_values={'0,0,0'=0, '255,0,0'=1}", "data.validation_split=0.5"
    )
    x, y = next(iter(build(recipe).train))
    np.testing.assert_array_equal(x.numpy() > 140, y.numpy() == 1)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda r: (r / "train" / "masks" / "001.png").unlink(),
            "1 file has no partner of the same stem",
        ),
        (
            lambda r: [p.unlink() for p in (r / "train" / "images").iterdir()],
            "images holds no image files",
        ),
        (
            lambda r: Image.fromarray(np.zeros((8, 8), np.uint8)).save(r / "train/masks/001.png"),
            "is 8x8 but its image",
        ),
        (lambda r: None, None),
    ],
)
def test_folder_errors(tmp_path, change, message):
    write_pairs(tmp_path / "train", 4)
    change(tmp_path)
    recipe = seg_recipe(tmp_path, "data.validation_split=0.5")
    if message is None:
        with pytest.raises(ZooError, match="has neither train/image/ with train/label/"):
            build(seg_recipe(tmp_path, "data.images_dir='image'", "data.masks_dir='label'"))
        return
    with pytest.raises(ZooError, match=message):
        build(recipe)


def test_joint_augmentation_keeps_masks_on_their_images(tmp_path):
    write_pairs(tmp_path / "train", 8, size=(32, 32))
    augment = (
        "augment=[{layer='RandomFlip', mode='horizontal_and_vertical'}, "
        "{layer='RandomRotation', factor=0.25, fill_mode='reflect', interpolation='nearest'}, "
        "{layer='RandomTranslation', height_factor=0.2, width_factor=0.2, "
        "interpolation='nearest'}, {layer='RandomBrightness', factor=0.1}]"
    )
    recipe = seg_recipe(tmp_path, augment, "data.validation_split=0.25", "data.batch_size=6")
    plain = build(seg_recipe(tmp_path, "data.validation_split=0.25", "data.batch_size=6"))
    x, y = next(iter(build(recipe).train))
    x0, _ = next(iter(plain.train))
    assert not np.array_equal(x.numpy() > 140, x0.numpy() > 140)  # they moved
    # Brightness changes pixel values a little; images and masks moved together.
    np.testing.assert_array_equal(x.numpy() > 140, y.numpy() == 1)
    assert y.dtype == "int32"


@pytest.mark.parametrize("fill_mode", ["reflect", "constant"])
def test_elastic_transform_moves_each_image_with_its_mask(tmp_path, fill_mode):
    # Keras 3.15's RandomElasticTransform, in a tf.data batch, returns the first image's warp
    # for every image and warps the masks by another field; zoo builds its own in its place.
    write_pairs(tmp_path / "train", 8, size=(32, 32))
    augment = (
        "augment=[{layer='RandomElasticTransform', factor=[1.0, 1.0], scale=[0.5, 0.5], "
        f"interpolation='nearest', fill_mode='{fill_mode}'}}]"
    )
    common = ("data.validation_split=0.25", "data.batch_size=6")
    x, y = next(iter(build(seg_recipe(tmp_path, augment, *common)).train))
    x0, y0 = next(iter(build(seg_recipe(tmp_path, *common)).train))
    x, y, x0 = x.numpy(), y.numpy(), x0.numpy()
    moved = (x > 140) != (x0 > 140)
    assert all(0.05 < m.mean() < 0.6 for m in moved)  # each image warped
    assert all(not np.array_equal(x[i], x[j]) for i in range(6) for j in range(i))
    np.testing.assert_array_equal(x > 140, y == 1)  # and each mask with it, exactly
    if fill_mode == "constant":  # pixels from outside the image: 0, and class 0 in the mask
        assert (x == 0).any()


def test_elastic_field_matches_keras_magnitude_with_independent_axes():
    import tensorflow as tf

    from zoo.data.elastic import RandomElasticTransform, warp

    layer = RandomElasticTransform(factor=[1.0, 1.0], scale=[1.0, 1.0], seed=0)
    field = layer.get_random_transformation({"images": tf.zeros([8, 128, 96, 1])})["field"]
    field = field.numpy()
    assert field.shape == (8, 128, 96, 2)
    # Keras: Gaussian noise times sigma, smoothed by a Gaussian of sigma (standard deviation
    # 1 / (2 sqrt(pi)) of the noise's), times alpha = 0.1 * max(h, w) * scale.
    alpha = 0.1 * 128
    expected = alpha / (2 * np.sqrt(np.pi))
    inner = field[:, 20:-20, 20:-20]  # the zero padding of the smoothing thins the borders
    assert 0.8 * expected < inner[..., 0].std() < 1.2 * expected
    assert 0.8 * expected < inner[..., 1].std() < 1.2 * expected
    assert abs(np.corrcoef(inner[..., 0].ravel(), inner[..., 1].ravel())[0, 1]) < 0.2
    # The warp samples each pixel at its displaced position: a whole-pixel shift is exact.
    images = tf.reshape(tf.range(2 * 6 * 5, dtype=tf.float32), [2, 6, 5, 1])
    shift = tf.concat([tf.ones([2, 6, 5, 1]), tf.fill([2, 6, 5, 1], -2.0)], axis=-1)
    out = warp(images, shift, "bilinear", "nearest", 0.0).numpy()[..., 0]
    src = images.numpy()[..., 0]
    np.testing.assert_array_equal(out[:, :5, 2:], src[:, 1:, :3])
    half = warp(images, shift * 0.5, "bilinear", "nearest", 0.0).numpy()[..., 0]
    np.testing.assert_allclose(half[:, :5, 1:], (src[:, :5, :4] + src[:, 1:, :4]) / 2, atol=1e-5)


def test_training_crops_keep_masks_on_their_images(tmp_path):
    write_pairs(tmp_path / "train", 8, size=(64, 64))
    recipe = seg_recipe(
        tmp_path,
        "data.image_size=[64, 64]",
        "data.crop_size=[32, 16]",
        "data.validation_split=0.25",
        "augment=[{layer='RandomFlip'}]",
    )
    data = build(recipe)
    x, y = next(iter(data.train))
    assert x.shape == (4, 32, 16, 1) and y.shape == (4, 32, 16, 1)
    np.testing.assert_array_equal(x.numpy() > 140, y.numpy() == 1)
    # Eval images stay whole; two epochs cut different windows, and epoch 0's again when
    # asked for again (a resumed run).
    assert next(iter(data.eval))[0].shape[1:3] == (64, 64)

    def epoch(k):
        data.epoch.assign(k)
        return [b[0].numpy() for b in data.train]

    first, second = epoch(0), epoch(1)
    assert any(not np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    for a, b in zip(first, epoch(0), strict=True):
        np.testing.assert_array_equal(a, b)


def test_crop_trained_unet_keeps_whole_image_input(tmp_path):
    write_pairs(tmp_path / "train", 8, size=(64, 64))
    write_pairs(tmp_path / "test", 4, size=(64, 64), seed=1)
    recipe = seg_recipe(
        tmp_path,
        "data.image_size=[64, 64]",
        "data.crop_size=[32, 32]",
        "model.args={base_filters=4, depth=2}",
        "fit.epochs=1",
        *QUIET,
    )
    run = zoo.train(recipe, output=tmp_path / "run", log=lambda *a, **k: None)
    model = keras.saving.load_model(run / rundir.MODEL)
    assert tuple(model.input.shape) == (None, 64, 64, 1)
    assert tuple(model.output.shape) == (None, 64, 64, 2)
    metrics = json.loads((run / rundir.METRICS).read_text())
    assert metrics["eval_examples"] == 4 and metrics["loss"] > 0  # the recipe's loss
    # Exported at the whole image size (parity on the 64x64 eval images); any size in, masks
    # at that size out.
    report = zoo.export(run, format="tflite", any_size=True)
    assert report["pixel_agreement"] >= 0.99 and report["examples"] == 4
    out = runner(Path(report["path"]), "tflite")(np.full((1, 48, 40, 1), 128, "float32"))
    assert out.shape == (1, 48, 40, 2)


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.crop_size=[512, 128]", "larger than data.image_size"),
        ("data.crop_size=[100, 128]", "must be a multiple of 16"),
    ],
)
def test_crop_size_errors(override, message):
    with pytest.raises(ZooError, match=message):
        load_recipe("unet_membrane_256", [override])
    with pytest.raises(ZooError, match="fully convolutional registered model"):
        load_recipe("unet_resnet34_membrane", ["data.crop_size=[128, 128]"])
    # unet_membrane trains on crops: a decoder swapped in by --set is pointed to a recipe that
    # does not.
    with pytest.raises(ZooError, match="start from a recipe without it .*unet_membrane_256"):
        load_recipe("unet_membrane", ["model={backbone='mobilenet_v2', head={decoder='fpn'}}"])
    with pytest.raises(ZooError, match="is for task 'segmentation'"):
        load_recipe("lenet_digits", ["data.crop_size=[8, 8]"])


@pytest.mark.parametrize("layer", sorted(segmentation.REFUSED))
def test_layers_that_cannot_move_masks_are_refused(tmp_path, layer):
    with pytest.raises(ZooError, match=f"augment: {layer} cannot be used for segmentation"):
        seg_recipe(tmp_path, f"augment=[{{layer='{layer}'}}]")


@pytest.mark.parametrize(
    "override, message",
    [
        ("compile.loss='tversky'", "is not a segmentation loss"),
        ("compile.metrics=['accuracy']", "'accuracy' is not a segmentation metric"),
        ("data.mask_values={0=0, 255=2}", "onto the class ids 0..N-1"),
        ("data.mask_values={'0,0'=0}", "neither a grey value"),
        ("data.source='image_folder'", "gives labels, task 'segmentation' trains on"),
        ("compile.class_weights=[1.0]", "give one weight per class"),
        ("model={backbone='resnet18', head={decoder='segformer'}}", "model.head.decoder"),
    ],
)
def test_recipe_errors(override, message):
    with pytest.raises(ZooError, match=message):
        load_recipe("unet_membrane_256", [override])


# ---------------------------------------------------------------------------------------------
# Decoders and models


DECODERS = [
    ("unet", "resnet18"),
    ("fpn", "resnet18"),
    ("deeplabv3plus", "mobilenet_v2"),
    pytest.param("unet", "mobilenet_v2", marks=pytest.mark.slow),
    pytest.param("fpn", "efficientnet_b0", marks=pytest.mark.slow),
    pytest.param("unet", "resnet20", marks=pytest.mark.slow),  # a CIFAR net: P1 and P2 only
]


@pytest.mark.parametrize("decoder, name", DECODERS)
def test_decoder_builds_trains_a_step_and_round_trips(decoder, name, tmp_path):
    import tensorflow as tf

    shape = (64, 64, 3)
    model = getattr(zoo.heads, decoder)(zoo.backbone(name, input_shape=shape), 3)
    x = np.random.default_rng(0).uniform(0, 255, (2, *shape)).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, (2, 64, 64, 1))
    out = keras.ops.convert_to_numpy(model(x))
    assert out.shape == (2, 64, 64, 3)
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-5)
    backbone_layers = {layer.name for layer in zoo.backbone(name, input_shape=shape).layers}
    assert all(
        layer.name.startswith("head_") or layer.name == "predictions"
        for layer in model.layers
        if layer.name not in backbone_layers
    )
    loss_fn = zoo.losses.SegmentationLoss(3, terms=("ce", "dice"))
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_weights)
    head = [g for g, w in zip(grads, model.trainable_weights) if w.path.startswith("head_")]
    assert head and all(g is not None for g in head)
    path = tmp_path / "m.keras"
    model.save(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(keras.saving.load_model(path)(x)),
        keras.ops.convert_to_numpy(model(x)),  # BatchNorm statistics moved in the step
        atol=1e-5,
    )


def test_input_sizes_the_backbone_cannot_divide_are_refused():
    with pytest.raises(ZooError, match="must be a multiple of 32 .* use e.g. 96x96"):
        zoo.heads.unet(zoo.backbone("resnet18", input_shape=(100, 100, 3)), 2)
    with pytest.raises(ZooError, match="multiples of 16"):
        zoo.get("unet", input_shape=(100, 100, 1))


def test_decoder_is_the_head_of_fine_tuning_phases():
    from zoo.training import _set_trainable, build_model

    recipe = load_recipe(
        "unet_membrane_256",
        [
            "model={backbone='mobilenet_v2', head={decoder='deeplabv3plus'}}",
            "data.channels=3",
            "data.normalization='none'",
            "phases=[{epochs=1, trainable='head'}, {epochs=1, trainable='P4'}]",
            "fit.epochs=2",
        ],
    )
    model = build_model(recipe, classes=2)
    net = model.get_layer("mobilenet_v2")
    _set_trainable(recipe, net, recipe.phases[0])
    trainable = {w.path.split("/")[0] for w in net.trainable_weights}
    assert trainable and all(n.startswith("head_") or n == "predictions" for n in trainable)
    assert "head_low_level_conv" in trainable  # a projection of P2, before deeper stages
    _set_trainable(recipe, net, recipe.phases[1])
    trainable = {w.path.split("/")[0] for w in net.trainable_weights}
    # P4 is computed by the blocks after P3 (block_6_expand_relu), the decoder by its own.
    assert "block_12_expand" in trainable and "block_5_expand" not in trainable


# ---------------------------------------------------------------------------------------------
# Losses and metrics against values computed by hand


def test_scores_from_a_confusion_matrix():
    truth = np.array([[0, 0, 1], [1, 2, 2]])
    predicted = np.array([[0, 1, 1], [1, 2, 0]])
    cm = segmentation.confusion(truth, predicted, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    s = segmentation.scores(cm)
    # IoU: class 0: 1 / (2 + 2 - 1) = 1/3, class 1: 2 / (3 + 2 - 2) = 2/3, class 2: 1/2.
    np.testing.assert_allclose(s["iou"], [1 / 3, 2 / 3, 1 / 2])
    assert s["mean_iou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    # Dice of the foreground classes, 2 TP / (true + predicted): 2*2/(2+3) and 2*1/(2+1).
    assert s["dice"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert s["pixel_accuracy"] == pytest.approx(4 / 6)


def test_keras_metrics_agree_with_the_hand_computed_scores():
    recipe = load_recipe("unet_membrane")
    truth = np.array([[0, 0, 1], [1, 2, 2]])[None, ..., None]
    predicted = np.array([[0, 1, 1], [1, 2, 0]])[None]
    probabilities = keras.ops.convert_to_numpy(keras.ops.one_hot(predicted, 3)) * 0.8 + 0.2 / 3
    found = {}
    for metric in segmentation.metrics(recipe, 3):
        metric.update_state(truth, probabilities)
        found[metric.name] = float(metric.result())
    assert found["mean_iou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3, rel=1e-6)
    assert found["dice"] == pytest.approx((0.8 + 2 / 3) / 2, rel=1e-6)
    assert found["pixel_accuracy"] == pytest.approx(4 / 6, rel=1e-6)


def test_segmentation_loss_terms():
    truth = np.array([[[0, 1], [1, 1]]])[..., None]
    p1 = np.array([[[0.9, 0.6], [0.2, 0.3]]])
    probabilities = np.stack([1 - p1, p1], -1).astype("float32")
    true_p = np.where(truth[..., 0] == 1, p1, 1 - p1)
    ce = -np.log(true_p).mean()
    one_hot = np.stack([truth[..., 0] == 0, truth[..., 0] == 1], -1)
    inter = (one_hot * probabilities).sum((1, 2))
    dice = (1 - 2 * inter / (one_hot.sum((1, 2)) + probabilities.sum((1, 2)))).mean()
    loss = zoo.losses.SegmentationLoss
    assert float(loss(2)(truth, probabilities)) == pytest.approx(ce, rel=1e-5)
    assert float(loss(2, terms=("dice",))(truth, probabilities)) == pytest.approx(dice, rel=1e-4)
    both = float(loss(2, terms=("ce", "dice"))(truth, probabilities))
    assert both == pytest.approx(ce + dice, rel=1e-4)
    weighted = float(loss(2, class_weights=[0.0, 2.0])(truth, probabilities))
    assert weighted == pytest.approx(2 * -np.log(true_p[truth[..., 0] == 1]).sum() / 4, rel=1e-5)
    focal = float(loss(2, terms=("focal",))(truth, probabilities))
    assert 0 < focal < ce


def test_lovasz_term_is_one_minus_iou_on_hard_predictions_and_orders_soft_ones():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 3, (2, 6, 5))
    truth[1, truth[1] == 2] = 0  # image 1 lacks class 2: averaged over its two classes only
    predicted = rng.integers(0, 3, (2, 6, 5))
    hard = np.eye(3, dtype="float32")[predicted]
    found = keras.ops.convert_to_numpy(zoo.losses.lovasz_softmax(np.eye(3)[truth], hard))
    for b in range(2):
        ious = [
            np.sum((truth[b] == c) & (predicted[b] == c))
            / np.sum((truth[b] == c) | (predicted[b] == c))
            for c in range(3)
            if (truth[b] == c).any()
        ]
        assert found[b] == pytest.approx(1 - np.mean(ious), abs=1e-6)
    loss = zoo.losses.SegmentationLoss(3, terms=("ce", "lovasz"))
    # A right but unsure prediction: the Lovász term is small and positive, and adds to ce.
    unsure = np.eye(3, dtype="float32")[truth] * 0.9 + 0.1 / 3
    ce_only = float(zoo.losses.SegmentationLoss(3)(truth[..., None], unsure))
    both = float(loss(truth[..., None], unsure))
    assert 0 < both - ce_only < 0.1
    assert float(loss(truth[..., None], hard)) > both


# ---------------------------------------------------------------------------------------------
# The real membrane data: a short run, its export and predict


@pytest.fixture(scope="module")
def membrane_run(tmp_path_factory):
    """A small U-Net trained briefly on the ISBI membranes (24 pairs, 6 held out), on crops as
    unet_membrane trains."""
    path = shared_data("membrane")
    recipe = load_recipe(
        "unet_membrane",
        [
            f"data.path='{path}'",
            "data.image_size=[256, 256]",
            "data.crop_size=[128, 128]",
            "model.args={base_filters=8, batch_norm=true}",
            "compile.optimizer={name='adam', learning_rate=0.003}",
            "compile.schedule={name='cosine'}",
            "fit.epochs=10",
            "augment=[]",
            *QUIET,
        ],
    )
    out = tmp_path_factory.mktemp("membrane") / "run"
    return zoo.train(recipe, output=out, log=lambda *a, **k: None)


@pytest.mark.data
def test_unet_on_membranes_beats_the_all_cell_baseline(membrane_run):
    metrics = json.loads((membrane_run / rundir.METRICS).read_text())
    # Predicting "cell" everywhere scores 0.78 pixel accuracy and 0.39 mean IoU; this run
    # measured 0.846 and 0.672 here.
    assert metrics["pixel_accuracy"] > 0.83
    assert metrics["mean_iou"] > 0.6
    assert metrics["iou_membrane"] > 0.3 and metrics["eval_examples"] == 6
    assert {"loss", "dice", "iou_cell"} <= set(metrics)
    assert (membrane_run / segmentation.OVERLAYS).stat().st_size > 10_000
    again = zoo.evaluate(membrane_run)
    assert again["mean_iou"] == pytest.approx(metrics["mean_iou"], abs=1e-6)


@pytest.mark.data
@pytest.mark.parametrize("fmt, quantize", [("tflite", "int8"), ("onnx", "none")])
def test_membrane_export_parity(membrane_run, fmt, quantize):
    report = zoo.export(membrane_run, format=fmt, quantize=quantize)
    assert report["agreement"] == "pixel_agreement" and report["examples"] == 6
    assert report["pixel_agreement"] >= (0.97 if quantize == "int8" else 0.999)
    assert abs(report["export_mean_iou"] - report["keras_mean_iou"]) < 0.02
    labels = (membrane_run / "export" / "labels.txt").read_text().split()
    assert labels == ["membrane", "cell"]


@pytest.mark.data
def test_predict_writes_masks_at_the_image_size(membrane_run, tmp_path):
    image = shared_data("membrane") / "test" / "image" / "0.png"
    results = zoo.predict(membrane_run, [image], output=tmp_path / "out")
    (result,) = results
    mask = np.asarray(Image.open(result["mask"]))
    assert mask.shape == (512, 512) and set(np.unique(mask)) <= {0, 255}
    assert Image.open(result["overlay"]).size == (512, 512)
    assert sum(result["fractions"].values()) == pytest.approx(1.0)
    assert 0.05 < result["fractions"]["membrane"] < 0.5
    # The exported model predicts the same mask.
    zoo.export(membrane_run, format="tflite")
    again = zoo.predict(membrane_run / "export" / "model.tflite", [image], output=tmp_path / "t")
    assert np.mean(np.asarray(Image.open(again[0]["mask"])) == mask) > 0.99


@pytest.mark.slow
@pytest.mark.data
def test_deeplabv3plus_over_mobilenet_v2_trains_on_membranes_with_set_only(tmp_path):
    path = shared_data("membrane")
    recipe = load_recipe(
        "unet_membrane_256",
        [
            f"data.path='{path}'",
            "model={backbone='mobilenet_v2', head={decoder='deeplabv3plus'}}",
            "data.channels=3",
            "data.normalization='none'",
            "data.image_size=[64, 64]",
            "fit.epochs=1",
            *QUIET,
        ],
    )
    run = zoo.train(recipe, output=tmp_path / "run", log=lambda *a, **k: None)
    metrics = json.loads((run / rundir.METRICS).read_text())
    assert {"mean_iou", "iou_membrane", "iou_cell", "dice", "pixel_accuracy"} <= set(metrics)
    model = keras.saving.load_model(run / rundir.MODEL)
    assert model.output.shape[1:] == (64, 64, 2)
    assert model.get_layer("mobilenet_v2").get_layer("head_aspp_1_conv").dilation_rate == (6, 6)


@pytest.mark.data
def test_a_decoder_over_a_backbone_trains_without_tensorflow_lines(tmp_path):
    """A user's zoo-train of an FPN (nearest-neighbour upsampling, whose gradient transposes
    int32 shapes) shows none of TensorFlow's C++ log lines: no start-up lines, and not oneDNN's
    "supports DT_INT32 only on platforms with AVX-512" of the first step. Over VGG-11, whose
    graph traces in about half the time of ResNet-18's."""
    sets = [
        f"data.path='{shared_data('membrane')}'",
        "model={backbone='vgg11', head={decoder='fpn'}}",
        "data.channels=3",
        "data.image_size=[64, 64]",
        "fit.epochs=1",
        "fit.verbose=0",
    ]
    args = [a for value in sets for a in ("--set", value)]
    result = run_as_user("zoo-train", "unet_membrane_256", *args, "--output", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-2000:]
    for line in result.stderr.splitlines():
        assert not TF_LOG_LINE.match(line), line
    assert (tmp_path / "run" / rundir.METRICS).is_file()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["deeplabv3plus_mobilenet_v2_pets", "unet_resnet50_pets"])
def test_pets_recipes_train_on_tfds_mock_data(mock_tfds, name, tmp_path):
    recipe = load_recipe(
        name,
        [
            "model.backbone_weights='none'",
            "data.image_size=[64, 64]",
            "data.batch_size=4",
            "data.mask_values={0=0, 1=1, 2=0, 3=2}",  # mock values are 0..3
            "phases=[{epochs=1, trainable='head'}, {epochs=1, trainable='all'}]",
            *QUIET,
        ],
    )
    with mock_tfds(num_examples=8, max_value=3):
        run = zoo.train(recipe, output=tmp_path / "run", log=lambda *a, **k: None)
    metrics = json.loads((run / rundir.METRICS).read_text())
    assert metrics["eval_examples"] == 8 and metrics["epochs"] == 2
    assert set(metrics["classes"]) == {"background", "pet", "border"}


def test_mask_offset_finds_masks_drawn_a_pixel_above_their_structures(tmp_path):
    """benchmarks/mask_offset.py, behind unet_membrane's choice of no flips: masks traced one
    pixel above dark lines are found to need a shift of one pixel down, none sideways."""
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    for folder in ("image", "label"):
        (tmp_path / folder).mkdir()
    for i in range(3):
        image = rng.uniform(150, 250, (64, 64))
        traced = np.full((64, 64), 255, np.uint8)
        for row in rng.choice(np.arange(8, 56), 4, replace=False):
            image[row, :] = 20  # a dark horizontal line
            traced[row - 1, :] = 0  # its mask, a pixel higher
        for column in rng.choice(np.arange(8, 56), 4, replace=False):
            image[:, column] = 20
            traced[:, column] = 0
        Image.fromarray(image.astype(np.uint8)).save(tmp_path / "image" / f"{i}.png")
        Image.fromarray(traced).save(tmp_path / "label" / f"{i}.png")
    script = Path(__file__).parents[1] / "benchmarks" / "mask_offset.py"
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert "dy: best whole shift +1" in done.stdout
    assert "dx: best whole shift +0" in done.stdout
    assert "best dy per slice (3): [1, 1, 1]" in done.stdout
