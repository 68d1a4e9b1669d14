"""Fine-tuning recipes end to end on small real data (digits): weights from a zoo run, phases,
a fresh optimizer per phase, frozen BatchNorm, and --resume across phases."""

import json

import keras
import numpy as np
import pytest

import zoo
from tests.test_training import FAST, Crash, history_epochs
from zoo import backbones, rundir, training
from zoo.errors import ZooError
from zoo.recipes import load_recipe

DIGITS = ["data.source='digits'", "data.image_size=[8, 8]", *FAST]
PHASES = (
    "phases=[{epochs=1, trainable='head', learning_rate=0.05}, "
    "{epochs=2, trainable='P2', learning_rate=0.01}]"
)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """ResNet-20 trained on digits 0-4: the run that seeds the fine-tuning below."""
    recipe = load_recipe(
        "resnet20_cifar10",
        [*DIGITS, "data.classes=['0', '1', '2', '3', '4']", "data.max_per_class=100"]
        + ["fit.epochs=2"],
    )
    run = zoo.train(recipe, output=tmp_path_factory.mktemp("pre") / "run", log=lambda *a: None)
    return run, keras.saving.load_model(run / rundir.MODEL).get_layer("resnet20")


def finetune(pretrained_run, *extra):
    return load_recipe(
        "finetune_cifar10",
        [
            *DIGITS,
            "data.classes=['5', '6', '7', '8', '9']",
            "data.max_per_class=60",
            f"model.backbone_weights='{pretrained_run}'",
            PHASES,
            *extra,
        ],
    )


class Record(keras.callbacks.Callback):
    """What each phase's fit starts from."""

    def __init__(self):
        super().__init__()
        self.starts = []

    def on_train_begin(self, logs=None):
        net = self.model.get_layer("resnet20")
        self.starts.append(
            {
                # The objects, not their ids: a collected one's id can come back.
                "optimizer": self.model.optimizer,
                "step": self.model.train_function,
                "iterations": int(self.model.optimizer.iterations.numpy()),
                "learning_rate": float(self.model.optimizer.learning_rate.numpy()),
                "momentum": self.model.optimizer.momentum,
                "trainable": sum(int(np.prod(w.shape)) for w in net.trainable_weights),
                "conv1": net.get_layer("conv1_conv").kernel.numpy().copy(),
                "bn_mean": net.get_layer("conv2_block1_1_bn").moving_mean.numpy().copy(),
                "head": net.get_layer("predictions").kernel.numpy().copy(),
            }
        )


def test_phases_train_what_they_say_from_the_pretrained_backbone(pretrained, tmp_path, quiet):
    pre_run, pre_net = pretrained
    record = Record()
    lines = []
    run = zoo.train(finetune(pre_run), output=tmp_path / "ft", callbacks=[record], log=lines.append)
    first, second = record.starts
    # Phase 1 starts from the pretrained backbone, a new head, and trains the head alone.
    np.testing.assert_array_equal(first["conv1"], pre_net.get_layer("conv1_conv").kernel.numpy())
    assert first["trainable"] == 64 * 5 + 5
    assert first["iterations"] == 0 and first["learning_rate"] == pytest.approx(0.05)
    # Phase 2: a fresh optimizer at its own rate; the frozen backbone and its BatchNorm
    # statistics came through phase 1 unchanged; the third stage (P2) and the head train.
    assert second["optimizer"] is not first["optimizer"]
    assert second["iterations"] == 0 and second["learning_rate"] == pytest.approx(0.01)
    assert second["momentum"] == first["momentum"] == 0.9  # the recipe's other arguments stay
    np.testing.assert_array_equal(second["conv1"], first["conv1"])
    np.testing.assert_array_equal(second["bn_mean"], first["bn_mean"])
    assert not np.array_equal(second["head"], first["head"])
    stage = sum(
        int(np.prod(w.shape))
        for layer in pre_net.layers
        if layer.name.startswith("conv4_")
        for w in layer.trainable_weights
    )
    assert second["trainable"] == stage + 64 * 5 + 5
    assert any("phase 2 of 2, epochs 2-3: P2 trainable" in line for line in lines)

    assert history_epochs(run) == [0, 1, 2]
    metrics = json.loads((run / rundir.METRICS).read_text())
    assert metrics["epochs"] == 3 and metrics["classes"] == ["5", "6", "7", "8", "9"]
    assert not list((run / rundir.CHECKPOINTS).glob("phase*")), "phase files are cleaned up"
    assert not (run / rundir.backup(1)).exists()
    # The saved model is the backbone plus a 5-class head, loadable by plain Keras.
    model = keras.saving.load_model(run / rundir.MODEL)
    assert model.output.shape == (None, 5)


def test_phases_training_the_same_layers_share_one_compiled_step(
    pretrained, tmp_path, monkeypatch, quiet
):
    """Phases that train the same variables (here all, at two rates) run one compiled train
    step, each phase still with a fresh optimizer at its own rate, and train as they would
    compiled one by one. The run compiled one by one stops inside its second phase and resumes
    with the shared step: its weights end bitwise those of the run shared throughout."""
    recipe = finetune(
        pretrained[0],
        "phases=[{epochs=1, learning_rate=0.05}, {epochs=2, learning_rate=0.01}]",
    )
    record = Record()
    run = zoo.train(recipe, output=tmp_path / "shared", callbacks=[record], log=quiet)
    first, second = record.starts
    assert second["step"] is first["step"]
    assert first["iterations"] == second["iterations"] == 0
    assert first["learning_rate"] == pytest.approx(0.05)
    assert second["learning_rate"] == pytest.approx(0.01)

    monkeypatch.setattr(training, "shares_step", lambda phases, k: False)
    alone = Record()
    with pytest.raises(KeyboardInterrupt):
        zoo.train(recipe, output=tmp_path / "alone", callbacks=[alone, Crash(2)], log=quiet)
    assert alone.starts[1]["step"] is not alone.starts[0]["step"]
    for name in ("head", "conv1", "bn_mean"):
        np.testing.assert_array_equal(second[name], alone.starts[1][name])
    monkeypatch.undo()
    resumed = zoo.train(recipe, output=tmp_path / "alone", resume=True, log=quiet)
    weights = keras.saving.load_model(resumed / rundir.MODEL).weights
    for a, b in zip(keras.saving.load_model(run / rundir.MODEL).weights, weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_resume_across_phases(pretrained, tmp_path, quiet):
    """A crash right at the start of phase 2 (the end of phase 1 is the starting point, with a
    fresh optimizer), then one inside phase 2 (its backup restores weights and optimizer)."""
    recipe = finetune(pretrained[0])
    out = tmp_path / "ft"
    first = Record()
    with pytest.raises(KeyboardInterrupt):
        zoo.train(recipe, output=out, callbacks=[first, Crash(1)], log=quiet)
    assert history_epochs(out) == [0]

    seen = []

    class Epochs(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(epoch)

    second = Record()
    with pytest.raises(KeyboardInterrupt):
        zoo.train(
            recipe, output=out, resume=True, callbacks=[second, Epochs(), Crash(2)], log=quiet
        )
    assert seen == [1, 2] and history_epochs(out) == [0, 1]
    (start,) = second.starts  # phase 1 is not run again
    np.testing.assert_array_equal(start["head"], first.starts[1]["head"])
    assert start["iterations"] == 0
    # conv1 is frozen in both phases: the pretrained weights came back from the checkpoints
    # (the resumed run does not read the pretrained run again).
    np.testing.assert_array_equal(start["conv1"], first.starts[0]["conv1"])

    seen.clear()
    third = Record()
    run = zoo.train(recipe, output=out, resume=True, callbacks=[third, Epochs()], log=quiet)
    assert seen == [2] and history_epochs(run) == [0, 1, 2]
    (start,) = third.starts
    steps = 5  # 60 images per class, 5 classes, less the 10% validation split: 270, batch 64
    assert start["iterations"] == steps
    np.testing.assert_array_equal(start["conv1"], first.starts[0]["conv1"])
    assert json.loads((run / rundir.METRICS).read_text())["epochs"] == 3


def test_backbone_weights_need_the_same_preprocessing(pretrained, tmp_path, quiet):
    with pytest.raises(ZooError, match="preprocessed by standardize .*data.normalization 'scale'"):
        zoo.train(
            finetune(pretrained[0], "data.normalization='scale'"), output=tmp_path / "x", log=quiet
        )
    assert not (tmp_path / "x").exists()


def test_bad_trainable_names_the_choices(pretrained, tmp_path, quiet):
    recipe = finetune(pretrained[0], "phases=[{epochs=1}, {epochs=1, trainable='conv9'}]")
    with pytest.raises(ZooError, match="trainable 'conv9'.*unknown layer 'conv9'"):
        zoo.train(recipe, output=tmp_path / "x", log=quiet)
    assert not (tmp_path / "x").exists()


def test_taps_of_the_training_net_match_the_backbone(pretrained):
    _, net = pretrained
    assert backbones.taps(net) == {"P1": "conv3_block3_out", "P2": "conv4_block3_out"}


@pytest.mark.slow  # 25-45 s each; `make test` builds them and checks their phases' stages
@pytest.mark.parametrize(
    "name", ["mobilenet_v2_flowers", "efficientnet_b0_flowers", "resnet50_pets"]
)
def test_tfds_fine_tuning_recipes_train_on_mock_data(name, mock_tfds, tmp_path, quiet):
    """The download-needing recipes as a user runs them, on TFDS mock data with random weights
    in place of the downloads, their phases shortened to one epoch each."""
    recipe = load_recipe(name)
    phases = ", ".join(
        f"{{epochs=1, trainable='{p.trainable}', "
        f"freeze_batchnorm={str(p.freeze_batchnorm).lower()}}}"
        for p in recipe.phases
    )
    recipe = load_recipe(
        name,
        [
            "model.backbone_weights='none'",
            "data.image_size=[32, 32]",
            "data.batch_size=8",
            "fit.verbose=0",
            f"phases=[{phases}]",
        ],
    )
    with mock_tfds(num_examples=24):
        run = zoo.train(recipe, output=tmp_path / "run", log=quiet)
    metrics = json.loads((run / rundir.METRICS).read_text())
    assert metrics["epochs"] == len(recipe.phases) == 2
    assert len(metrics["classes"]) == {"resnet50_pets": 37}.get(name, 5)
