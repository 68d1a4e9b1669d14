"""Every shipped recipe loads and builds its model; recipe errors name the key and the value."""

import keras
import pytest

import zoo
from zoo.errors import ZooError
from zoo.recipes import dumps, load_recipe
from zoo.recipes.loader import builtin_dir
from zoo.training import _set_trainable, build_model

RECIPE_FILES = sorted(builtin_dir().glob("*.toml"))


def test_recipes_are_shipped():
    assert len(RECIPE_FILES) >= 7
    assert [p.stem for p in RECIPE_FILES] == zoo.list_recipes()


@pytest.mark.parametrize("path", RECIPE_FILES, ids=lambda p: p.stem)
def test_recipe_loads_and_builds(path):
    recipe = load_recipe(path.stem)
    assert recipe.name == path.stem
    assert recipe.description.strip()
    assert dumps(load_recipe(path)) == dumps(recipe)
    assert recipe.model.label in zoo.list_models()
    if recipe.model.backbone:  # ImageNet weights and earlier runs are not here: random ones
        recipe = load_recipe(path.stem, ["model.backbone_weights='none'"])
    model = build_model(recipe, classes=7)
    if recipe.task == "text":  # strings in (the vectorizer adapts on training data), a class out
        assert tuple(model.input.shape) == (None,) and model.input.dtype == "string"
        assert tuple(model.output.shape) == (None, 7)
        return
    height, width = recipe.data.image_size
    assert tuple(model.input.shape) == (None, height, width, recipe.data.channels)
    # One class per image, or per pixel (at the input's size), or an embedding (an ensemble's
    # members' joined).
    head = recipe.model.head or {}
    nets = head.get("ensemble", 1)  # a count, or what each net sees
    expected = {
        "classification": (None, 7),
        "segmentation": (None, height, width, 7),
        "faces": (
            None,
            head.get("embedding_dim", 128) * (nets if isinstance(nets, int) else len(nets)),
        ),
    }
    assert tuple(model.output.shape) == expected[recipe.task]
    net = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    for phase in recipe.phases:  # every phase names layers the net has, and trains some
        assert _set_trainable(recipe, net, phase) > 0


def test_resolved_recipe_round_trips(tmp_path):
    recipe = load_recipe("resnet56_cifar10", ["fit.epochs=3"])
    path = tmp_path / "recipe.toml"
    path.write_text(dumps(recipe))
    assert load_recipe(path) == recipe
    assert "extends" not in path.read_text()


def test_extends_inherits_and_overrides():
    child = load_recipe("resnet56_cifar10")
    parent = load_recipe("resnet20_cifar10")
    assert child.model.name == "resnet56"
    assert child.data == parent.data
    assert child.augment == parent.augment
    assert child.compile == parent.compile


def test_extends_replaces_a_table_with_another_name():
    recipe = load_recipe("resnet18_cifar10")
    assert recipe.compile.schedule.name == "cosine"
    assert recipe.compile.optimizer.args == {
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 5e-4,
    }


def test_user_file_extends_a_shipped_recipe(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('extends = "lenet_digits"\ndescription = "mine"\n[fit]\nepochs = 2\n')
    recipe = load_recipe(str(path))
    assert (recipe.name, recipe.fit.epochs, recipe.data.source) == ("mine", 2, "digits")


def test_extends_with_another_dataset_name_keeps_the_data_table(tmp_path):
    # data.name is a TFDS dataset, not a choice of kind: the rest of [data] is inherited.
    path = tmp_path / "fashion.toml"
    path.write_text('extends = "lenet_mnist"\ndescription = "d"\n[data]\nname = "fashion_mnist"\n')
    recipe = load_recipe(str(path))
    parent = load_recipe("lenet_mnist")
    assert recipe.data.name == "fashion_mnist"
    assert recipe.data.source == "tfds" and recipe.data.image_size == parent.data.image_size
    assert recipe.data == parent.data.model_copy(update={"name": "fashion_mnist"})


def test_another_source_does_not_inherit_where_the_dataset_was(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(
        'extends = "lenet_mnist"\ndescription = "d"\n[data]\nsource = "idx"\npath = "m"\n'
    )
    for recipe in (
        load_recipe(str(path)),
        load_recipe("lenet_mnist", ["data.path='m'", "data.source='idx'"]),
    ):
        assert (recipe.data.source, recipe.data.path, recipe.data.name) == ("idx", "m", None)
        assert recipe.data.image_size == load_recipe("lenet_mnist").data.image_size
    # A key that the recipe's own source does not read is an error, not ignored.
    path.write_text('extends = "lenet_digits"\ndescription = "d"\n[data]\nname = "mnist"\n')
    with pytest.raises(ZooError, match="data.name is read by source 'tfds' only, and this "):
        load_recipe(str(path))
    with pytest.raises(ZooError, match="data.path is read by source 'idx' or 'image_folder'"):
        load_recipe("lenet_digits", ["data.path='x'"])


def test_monitors_must_name_a_logged_metric():
    with pytest.raises(ZooError, match=r"unknown fit.monitor metric 'val_acc'; did you mean "):
        load_recipe("lenet_digits", ["fit.monitor='val_acc'"])
    assert load_recipe("lenet_digits", ["fit.monitor='val_loss'"]).monitor == "val_loss"
    with pytest.raises(ZooError, match=r"fit.early_stopping.monitor metric 'val_loss'.*logs loss"):
        load_recipe("arcface_att_faces", ["fit.early_stopping={patience=2}"])
    with pytest.raises(ZooError, match="'val_mean_iou'.*segmentation logs"):
        load_recipe("unet_membrane", ["compile.metrics=['dice']", "fit.monitor='val_mean_iou'"])


@pytest.mark.parametrize("value", ["none", "linear", "sigmoid"])
def test_classifier_activation_is_the_tasks(value):
    with pytest.raises(ZooError, match=f"classifier_activation '{value}': a classification"):
        load_recipe("lenet_digits", [f"model.args={{classifier_activation='{value}'}}"])
    assert load_recipe("lenet_digits", ["model.args={classifier_activation='softmax'}"])


@pytest.mark.parametrize("recipe", ["lenet_digits", "lenet_mnist", "unet_membrane"])
def test_duplicated_classes_are_refused_for_every_source(recipe):
    with pytest.raises(ZooError, match="data.classes lists '1' more than once"):
        load_recipe(recipe, ["data.classes=['1', '2', '1']"])


@pytest.mark.parametrize(
    "setting, message",
    [
        ('augment=[{layer="RandomFlip", mode=3}]', "mode = 3 is an int, but mode takes a str"),
        ('augment=[{layer="RandomRotation", factor="x"}]', "RandomRotation: The `factor`"),
        ('augment=[{layer="RandomZoom", height_factor=2.5}]', "RandomZoom: The `height_factor`"),
        ('augment=[{layer="RandomCrop", height=40, width=8}]', "RandomCrop 40x8 is larger than"),
        ('augment=[{layer="RandomCrop", height="8", width=8}]', "must be whole numbers"),
        (
            'compile.optimizer={name="sgd", learning_rate=0.1, momentum="high"}',
            "momentum = 'high' is a str, but momentum takes a float",
        ),
        ('compile.optimizer={name="sgd", learning_rate=0.1, momentum=-1}', "`momentum` must be"),
        ('compile.optimizer={name="adam", learning_rate=0.1, amsgrad=1}', "amsgrad takes a bool"),
    ],
)
def test_augment_and_optimizer_arguments_are_type_checked(setting, message):
    with pytest.raises(ZooError) as e:
        load_recipe("lenet_digits", [setting])
    assert message in str(e.value)


@pytest.mark.parametrize("factor, erased", [([1.0, 1.0], True), ([0.0, 0.0], False)])
def test_factor_arguments_take_a_range(factor, erased):
    """Keras' *factor arguments take a (min, max) range as well as a number: RandomErasing's
    probability drawn from [1, 1] erases every image, from [0, 0] none."""
    import tensorflow as tf

    from zoo.data.pipeline import augmenter

    recipe = load_recipe(
        "lenet_digits", [f"augment=[{{layer='RandomErasing', factor={factor}, fill_value=0.0}}]"]
    )
    assert recipe.augment[0].args["factor"] == factor
    images = tf.fill([8, 16, 16, 1], 200.0)
    out = augmenter(recipe)({"images": images, "labels": tf.zeros([8])}, tf.constant([1, 2]))
    changed = (out["images"].numpy() != 200.0).reshape(8, -1).any(axis=1)
    assert changed.all() if erased else not changed.any()


@pytest.mark.parametrize(
    "setting, message",
    [
        (
            'augment=[{layer="RandomErasing", factor=[0.1, 0.2, 0.3]}]',
            "factor = [0.1, 0.2, 0.3] is a list, but factor takes a float",
        ),
        (
            'augment=[{layer="RandomGaussianBlur", kernel_size=[3, 3]}]',
            "kernel_size = [3, 3] is a list, but kernel_size takes an int",
        ),
    ],
)
def test_ranges_only_where_keras_takes_them(setting, message):
    with pytest.raises(ZooError) as e:
        load_recipe("lenet_digits", [setting])
    assert message in str(e.value)


def test_extends_cycle(tmp_path):
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(ZooError, match="cycle"):
        load_recipe(str(tmp_path / "a.toml"))


def test_overrides_are_toml_values_or_strings():
    recipe = load_recipe(
        "lenet_digits",
        [
            "data.batch_size=64",
            "data.source=image_folder",
            "data.path=/some/folder",
            "data.classes=['3', '5']",
            "compile.optimizer.learning_rate=1e-3",
            "compile.schedule={name='step', boundaries=[5, 8]}",
            "augment=[{layer='RandomFlip', mode='horizontal'}]",
        ],
    )
    assert recipe.data.batch_size == 64
    assert recipe.data.path == "/some/folder"
    assert recipe.data.classes == ["3", "5"]
    assert recipe.compile.optimizer.learning_rate == 1e-3
    assert recipe.compile.schedule.boundaries == [5, 8]
    assert recipe.augment[0].args == {"mode": "horizontal"}


def test_recipes_are_frozen():
    recipe = load_recipe("lenet_digits")
    with pytest.raises(Exception, match="frozen"):
        recipe.fit.epochs = 3


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.batch_sise=3", "data.batch_sise is not a recipe key (allowed: source, name"),
        ("data.batch_size=-4", "data.batch_size: input should be greater than 0, received -4"),
        ("data.batch_size='64'", "data.batch_size: input should be a valid integer, received '64'"),
        ("fit.epochs=2.5", "fit.epochs: input should be a valid integer"),
        (
            "model.nmae='x'",
            "model.nmae is not a recipe key "
            "(allowed: name, backbone, backbone_weights, head, args)",
        ),
        (
            "compile.schedule.alphaa=1",
            "compile.schedule.alphaa is not a recipe key (allowed: name, warmup_epochs, alpha)",
        ),
        ("compile.optimizer.momentun=0.9", "optimizer 'adam' has no argument 'momentun'"),
        (
            "compile.optimizer.name='adagrad'",
            "compile.optimizer.name: input should be 'sgd', "
            "'adam', 'adamw' or 'rmsprop', received 'adagrad'",
        ),
        ("augment=[{layer='RandomFlipp'}]", "unknown augmentation layer 'RandomFlipp'; allowed: "),
        (
            "augment=[{layer='RandomFlip', mod='x'}]",
            "RandomFlip has no argument 'mod'; allowed: mode",
        ),
        ("data.source='idx'", "source 'idx' needs data.path"),
        ("data.normalization='standardize'", "needs data.mean with one value per channel"),
        ("data.image_size=[32]", "data.image_size: list should have at least 2 items"),
        ("task='segmentaton'", "unknown task 'segmentaton'; did you mean 'segmentation'"),
        ("task='segmentation'", "data.source 'digits' gives labels, task 'segmentation'"),
        ("compile.schedule={name='step'}", "needs exactly one of boundaries"),
    ],
)
def test_errors_name_the_key_and_value(override, message):
    with pytest.raises(ZooError) as e:
        load_recipe("lenet_digits", [override])
    text = str(e.value)
    assert text.startswith("recipe lenet_digits: ")
    assert message in text
    assert "\n" not in text


@pytest.mark.parametrize(
    "recipe, override, message",
    [
        # the one branch of the union whose type the value has speaks, without its name
        (
            "arcface_att_faces",
            "data.eval_identities=[]",
            "recipe arcface_att_faces: data.eval_identities: list should have at least 2 items "
            "after validation, not 0, received []",
        ),
        (
            "arcface_att_faces",
            "data.eval_identities=['s1', 2]",
            "recipe arcface_att_faces: data.eval_identities.1: input should be a valid string, "
            "received 2",
        ),
        (
            "textcnn_sms_spam",
            "data.label_column=-1",
            "recipe textcnn_sms_spam: data.label_column: input should be greater than or equal "
            "to 0, received -1",
        ),
        # no branch takes the value's type: one line of what they take
        (
            "arcface_att_faces",
            "data.eval_identities='ten'",
            "recipe arcface_att_faces: data.eval_identities: input should be a valid list or a "
            "valid integer or a valid number, received 'ten'",
        ),
        (
            "lenet_digits",
            "runtime.jit_compile='yes'",
            "recipe lenet_digits: runtime.jit_compile: input should be 'auto' or a valid "
            "boolean, received 'yes'",
        ),
    ],
)
def test_union_errors_are_said_once(recipe, override, message):
    """pydantic reports a value no branch of a union accepts once per branch, under names
    like list[constrained-str]; the recipe error says it once, in the recipe's own keys."""
    with pytest.raises(ZooError) as e:
        load_recipe(recipe, [override])
    assert str(e.value) == message


def test_unknown_recipe_suggests():
    with pytest.raises(ZooError, match="did you mean 'lenet_mnist'"):
        load_recipe("lenet_mnsit")


def test_bad_override_syntax():
    with pytest.raises(ZooError, match="key=value"):
        load_recipe("lenet_digits", ["fit.epochs"])
    with pytest.raises(ZooError, match="fit is not a table"):
        load_recipe("lenet_digits", ["fit=3", "fit.epochs=3"])


def test_invalid_toml(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("description = \n")
    with pytest.raises(ZooError, match="not valid TOML"):
        load_recipe(str(path))


def test_phases_and_backbone_keys():
    recipe = load_recipe("mobilenet_v2_flowers")
    assert recipe.model.backbone == "mobilenet_v2" and recipe.model.label == "mobilenet_v2"
    assert recipe.model.head["dropout"] == 0.2
    assert recipe.fit.epochs is None and recipe.epochs == 10
    assert [p.trainable for p in recipe.phases] == ["head", "block_11"]
    assert recipe.phases[1].learning_rate == 1e-4 and recipe.phases[1].schedule.name == "cosine"
    assert load_recipe("mobilenet_v2_flowers", ["fit.epochs=10"]).epochs == 10
    assert load_recipe("lenet_digits").epochs == load_recipe("lenet_digits").fit.epochs


@pytest.mark.parametrize(
    "name, override, message",
    [
        ("mobilenet_v2_flowers", "fit.epochs=3", "the phases add up to 10 epochs"),
        ("lenet_digits", "model.backbone='resnet20'", "give one of model.name"),
        ("lenet_digits", "model.backbone_weights='imagenet'", "go with model.backbone"),
        ("finetune_cifar10", "model.backbone='lenet5'", "unknown backbone 'lenet5'"),
        ("finetune_cifar10", "model.head={dropout=1.5}", "model.head.dropout"),
        ("finetune_cifar10", "phases=[{epochs=0}]", "phases.0.epochs"),
        ("finetune_cifar10", "phases=[{epochs=1, trainble='all'}]", "phases.0.trainble"),
        ("mobilenet_v2_flowers", "data.normalization='scale'", 'set data.normalization = "none"'),
        ("lenet_digits", "model={name='mobilenet_v2'}", 'set data.normalization = "none"'),
    ],
)
def test_transfer_learning_errors(name, override, message):
    with pytest.raises(ZooError) as e:
        load_recipe(name, [override])
    assert message in str(e.value) and "\n" not in str(e.value)
