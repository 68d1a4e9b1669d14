"""The recipe schema: strict, frozen, typed. Derived values (steps per epoch) are never stored."""

from __future__ import annotations

import inspect
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0, lt=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# Keras preprocessing layers a recipe may name in [[augment]]; each runs in the training input
# pipeline only, on {"images", "labels"} batches of raw pixel values in [0, 255].
AUGMENT_LAYERS = (
    "AugMix",
    "AutoContrast",
    "CutMix",
    "Equalization",
    "MixUp",
    "RandAugment",
    "RandomBrightness",
    "RandomColorDegeneration",
    "RandomColorJitter",
    "RandomContrast",
    "RandomCrop",
    "RandomElasticTransform",
    "RandomErasing",
    "RandomFlip",
    "RandomGaussianBlur",
    "RandomGrayscale",
    "RandomHue",
    "RandomInvert",
    "RandomPerspective",
    "RandomPosterization",
    "RandomRotation",
    "RandomSaturation",
    "RandomSharpness",
    "RandomShear",
    "RandomTranslation",
    "RandomZoom",
    "Solarization",
)
OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop"}


def _keyword_arguments(cls) -> list[str]:
    params = inspect.signature(cls.__init__).parameters
    return [
        p
        for p, v in params.items()
        if p not in ("self", "name", "dtype") and v.kind is not inspect.Parameter.VAR_KEYWORD
    ]


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_arguments(what: str, cls, args: dict, **fixed) -> None:
    """Names and types of `args` for `cls`: a name it does not take, a value whose type differs
    from the argument's default (a number for a string, say), or a value the class itself
    refuses when built (with `fixed` arguments) is an error naming the argument."""
    allowed = _keyword_arguments(cls)
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise ValueError(
            f"{what} has no argument {', '.join(repr(u) for u in unknown)}; "
            f"allowed: {', '.join(allowed)}"
        )
    defaults = inspect.signature(cls.__init__).parameters
    for key, value in args.items():
        default = defaults[key].default
        if default is inspect.Parameter.empty or default is None:
            continue
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int | float):
            ok = _is_number(value) or (
                # Keras' *factor arguments (and RandomElasticTransform's scale) take a
                # (min, max) range as well as a number
                (key.endswith("factor") or key == "scale")
                and isinstance(value, list | tuple)
                and len(value) == 2
                and all(_is_number(v) for v in value)
            )
        elif isinstance(default, str):
            # A string default may stand for a choice among values of other types too
            # (RandomCrop's data_format); only numbers and booleans for a string are refused.
            ok = not isinstance(value, bool | int | float)
        elif isinstance(default, list | tuple):
            ok = isinstance(value, list | tuple | int | float)
        else:
            ok = True
        if not ok:
            raise ValueError(
                f"{what}: {key} = {value!r} is {_a(type(value).__name__)}, but {key} takes "
                f"{_a(type(default).__name__)} (default {default!r})"
            )
    try:
        cls(**fixed, **args)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{what}: {str(e).splitlines()[0]}") from None


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _unknown(name: str, choices, what: str, hint: str) -> ValueError:
    from zoo.errors import suggest

    return ValueError(str(suggest(name, choices, what=what, hint=hint)))


class ModelConfig(_Strict):
    """A registered model by `name`, or the task's head over `backbone` (its keys are the
    task's: see the `Head` table of each zoo.tasks module)."""

    name: str | None = None
    backbone: str | None = None
    backbone_weights: str = "none"
    head: dict[str, Any] | None = None
    args: dict[str, Any] = {}

    @field_validator("name")
    @classmethod
    def _registered(cls, name):
        from zoo import registry

        if name is not None and name not in registry.list_models():
            raise _unknown(name, registry.list_models(), "model", "`zoo list models` shows them")
        return name

    @field_validator("backbone")
    @classmethod
    def _backbone(cls, name):
        from zoo import backbones

        if name is not None and name not in backbones.names():
            raise _unknown(name, backbones.names(), "backbone", "`zoo list backbones` shows them")
        return name

    @model_validator(mode="after")
    def _one_model(self):
        if (self.name is None) == (self.backbone is None):
            raise ValueError(
                "give one of model.name (a registered model) or model.backbone (a backbone "
                "under the task's head); to replace the model of a recipe, set the "
                "whole table: --set 'model={backbone=\"mobilenet_v2\"}'"
            )
        if self.name is not None and (self.head is not None or self.backbone_weights != "none"):
            raise ValueError(
                "model.head and model.backbone_weights go with model.backbone; for model.name, "
                "pass builder arguments in model.args (weights, dropout, ...)"
            )
        return self

    @property
    def label(self) -> str:
        """The registered model or the backbone."""
        return self.name or self.backbone


# What each source yields beside the images, as the Keras preprocessing layers' dict keys.
SOURCE_TARGETS = {
    "digits": ("labels",),
    "idx": ("labels",),
    "image_folder": ("labels",),
    "segmentation_folder": ("segmentation_masks",),
    "text_file": ("labels",),
    "text_folder": ("labels",),
    "tfds": ("labels", "segmentation_masks"),
}
# What each source's examples hold as the model's input ("images" or "texts").
SOURCE_INPUTS = {
    "digits": ("images",),
    "idx": ("images",),
    "image_folder": ("images",),
    "segmentation_folder": ("images",),
    "text_file": ("texts",),
    "text_folder": ("texts",),
    "tfds": ("images", "texts"),
}
TEXT_SOURCES = ("text_file", "text_folder")


# Augmentation layers that work on colour (RGB) images only.
COLOUR_LAYERS = ("RandomGrayscale", "RandomHue", "RandomSaturation")
SOURCES = (
    "tfds",
    "idx",
    "image_folder",
    "segmentation_folder",
    "digits",
    "text_file",
    "text_folder",
)

# The [data] keys that say where one kind of source finds its dataset, and those sources.
SOURCE_KEYS = {
    "name": ("tfds",),
    "data_dir": ("tfds",),
    "path": tuple(s for s in SOURCES if s not in ("tfds", "digits")),
}


class DataConfig(_Strict):
    source: Literal[SOURCES]
    name: str | None = None
    path: str | None = None
    data_dir: str | None = None
    train_split: str = "train"
    eval_split: str | None = "test"
    validation_split: Fraction = 0.1
    # images: the size every image is resized to (required for image data).
    image_size: Annotated[list[PositiveInt], Field(min_length=2, max_length=2)] | None = None
    # segmentation: train on random crops of this size of the images at image_size (the model
    # is fully convolutional); evaluation, the saved model and exports take image_size.
    crop_size: Annotated[list[PositiveInt], Field(min_length=2, max_length=2)] | None = None
    channels: Literal[1, 3] = 3
    normalization: Literal["scale", "standardize", "none"] = "scale"
    mean: list[float] | None = None
    std: list[float] | None = None
    batch_size: PositiveInt = 32
    cache: bool = True
    shuffle: bool = True
    shuffle_buffer: PositiveInt = 10_000
    classes: list[str] | None = None
    max_per_class: PositiveInt | None = None
    # image folders: leave out (and count) files that are not readable images, instead of
    # stopping with an error naming the first.
    skip_corrupt: bool = False
    # segmentation_folder: the sub-folders pairing images and masks by file stem, and the mask
    # values of each class id ("0" = 0, "255" = 1 for binary masks; "R,G,B" keys for colour
    # masks). Default: binary 0/255 (or 0/1) masks.
    images_dir: Annotated[str, Field(min_length=1)] = "images"
    masks_dir: Annotated[str, Field(min_length=1)] = "masks"
    mask_values: dict[str, Annotated[int, Field(ge=0, le=255)]] | None = None
    # faces: the identities held out of training and verified on (folder names, or a count or
    # fraction of the identities drawn with runtime.seed).
    eval_identities: (
        Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=2)]
        | Annotated[int, Field(ge=2)]
        | Fraction
        | None
    ) = None

    # text_file: the label and text columns (header names, or 0-based indices of a file
    # without a header line), the delimiter (default: tab for .tsv/.txt, comma for .csv) and
    # whether the first line is a header (default: when the columns are given by name).
    label_column: str | Annotated[int, Field(ge=0)] = 0
    text_column: str | Annotated[int, Field(ge=0)] = 1
    delimiter: Annotated[str, Field(min_length=1, max_length=1)] | None = None
    header: bool | None = None
    # text sources: the files' encoding.
    encoding: Annotated[str, Field(min_length=1)] = "utf-8"
    # text: keras.layers.TextVectorization inside the model, adapted on the training split:
    # word or character tokens, the vocabulary size (padding and OOV included), the token
    # count every text is padded or cut to, n-grams (off by default), and standardization.
    tokens: Literal["word", "character"] = "word"
    max_tokens: Annotated[int, Field(ge=3)] = 20_000
    sequence_length: PositiveInt = 100
    ngrams: Annotated[int, Field(ge=2)] | None = None
    # "lower_split_punctuation_zero_digits" is zoo's (zoo.layers.split_punctuation_zero_digits).
    standardize: Literal[
        "lower_and_strip_punctuation",
        "lower",
        "strip_punctuation",
        "none",
        "lower_split_punctuation_zero_digits",
    ] = "lower_and_strip_punctuation"

    @field_validator("classes")
    @classmethod
    def _distinct_classes(cls, classes):
        if classes is not None:
            twice = sorted({c for c in classes if classes.count(c) > 1})
            if twice:
                raise ValueError(
                    f"data.classes lists {', '.join(map(repr, twice))} more than once; name "
                    "each class once"
                )
        return classes

    @field_validator("mask_values")
    @classmethod
    def _mask_keys(cls, values):
        if values is None:
            return values
        if not values:
            raise ValueError("data.mask_values is empty; map each mask value to a class id")
        for key in values:
            parts = key.split(",")
            if len(parts) not in (1, 3) or not all(
                p.strip().isdigit() and int(p) <= 255 for p in parts
            ):
                raise ValueError(
                    f"data.mask_values key {key!r} is neither a grey value 0-255 nor an "
                    "'R,G,B' colour (e.g. {0 = 0, 255 = 1} or {\"128,0,0\" = 1})"
                )
        ids = sorted(set(values.values()))
        if ids != list(range(len(ids))):
            raise ValueError(
                f"data.mask_values must map onto the class ids 0..N-1 with none left out, "
                f"received ids {ids}"
            )
        return values

    @model_validator(mode="after")
    def _source_fields(self):
        # Keys another source reads: set here, they would be silently ignored.
        for key, sources in SOURCE_KEYS.items():
            if key in self.model_fields_set and getattr(self, key) is not None:
                if self.source not in sources:
                    raise ValueError(
                        f"data.{key} is read by source {' or '.join(map(repr, sources))} only, "
                        f"and this recipe's data.source is {self.source!r}: set data.source "
                        f"too, or leave data.{key} out"
                    )
        if self.source == "tfds" and not self.name:
            raise ValueError("source 'tfds' needs data.name, the TFDS dataset name")
        if self.source in ("idx", "image_folder", "segmentation_folder") and not self.path:
            raise ValueError(f"source {self.source!r} needs data.path, the dataset folder")
        if self.source == "text_file" and not self.path:
            raise ValueError(
                "source 'text_file' needs data.path, a TSV/CSV file or a folder holding one "
                "(or train.tsv and test.tsv)"
            )
        if self.source == "text_folder" and not self.path:
            raise ValueError(
                "source 'text_folder' needs data.path, a folder of train/<class>/*.txt"
            )
        if self.source not in TEXT_SOURCES and self.source != "tfds" and not self.image_size:
            raise ValueError(
                f"source {self.source!r} gives images: set data.image_size = [height, width]"
            )
        if self.normalization == "standardize":
            for key in ("mean", "std"):
                value = getattr(self, key)
                if value is None or len(value) != self.channels:
                    raise ValueError(
                        f"normalization 'standardize' needs data.{key} with one value per "
                        f"channel ({self.channels}), received {value!r}"
                    )
            if any(s <= 0 for s in self.std):
                raise ValueError(f"data.std must be positive, received {self.std!r}")
        return self


class AugmentLayer(BaseModel):
    """One Keras preprocessing layer: `layer` names it, the other keys are its arguments."""

    model_config = ConfigDict(extra="allow", frozen=True)
    layer: str

    @field_validator("layer")
    @classmethod
    def _known_layer(cls, name):
        if name not in AUGMENT_LAYERS:
            raise ValueError(
                f"unknown augmentation layer {name!r}; allowed: {', '.join(AUGMENT_LAYERS)}"
            )
        return name

    @property
    def args(self) -> dict:
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _known_arguments(self):
        from zoo.data.elastic import layer_class

        _check_arguments(f"augmentation layer {self.layer}", layer_class(self.layer), self.args)
        return self


class OptimizerConfig(BaseModel):
    """`name` and `learning_rate`, then any argument of the Keras optimizer class."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: Literal["sgd", "adam", "adamw", "rmsprop"]
    learning_rate: PositiveFloat

    @property
    def args(self) -> dict:
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _known_arguments(self):
        import keras

        cls = getattr(keras.optimizers, OPTIMIZERS[self.name])
        _check_arguments(
            f"optimizer {self.name!r}", cls, self.args, learning_rate=self.learning_rate
        )
        return self


class ConstantSchedule(_Strict):
    name: Literal["constant"]
    warmup_epochs: Annotated[float, Field(ge=0)] = 0


class CosineSchedule(_Strict):
    name: Literal["cosine"]
    warmup_epochs: Annotated[float, Field(ge=0)] = 0
    alpha: Annotated[float, Field(ge=0, le=1)] = 0.0


class StepSchedule(_Strict):
    """Multiplies the learning rate by `factor` at each boundary: `boundaries` in epochs, or
    `fractions` of fit.epochs (so that `--set fit.epochs=N` keeps the schedule's shape)."""

    name: Literal["step"]
    warmup_epochs: Annotated[float, Field(ge=0)] = 0
    boundaries: Annotated[list[PositiveFloat], Field(min_length=1)] | None = None
    fractions: Annotated[list[Fraction], Field(min_length=1)] | None = None
    factor: PositiveFloat = 0.1

    @model_validator(mode="after")
    def _one_of(self):
        if (self.boundaries is None) == (self.fractions is None):
            raise ValueError(
                "schedule 'step' needs exactly one of boundaries (epochs) or "
                "fractions (of fit.epochs)"
            )
        return self


class ExponentialSchedule(_Strict):
    """Multiplies the learning rate by `decay_rate` every `decay_epochs`."""

    name: Literal["exponential"]
    warmup_epochs: Annotated[float, Field(ge=0)] = 0
    decay_rate: PositiveFloat
    decay_epochs: PositiveFloat = 1.0


Schedule = Annotated[
    ConstantSchedule | CosineSchedule | StepSchedule | ExponentialSchedule,
    Field(discriminator="name"),
]


class CompileConfig(_Strict):
    optimizer: OptimizerConfig
    schedule: Schedule = ConstantSchedule(name="constant")
    # The task's loss and metrics (see each zoo.tasks module); default: the task's.
    loss: str | None = None
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
    metrics: list[str] | None = None
    class_weights: list[Annotated[float, Field(ge=0)]] | None = None


class EarlyStopping(_Strict):
    monitor: str = "val_loss"
    patience: PositiveInt = 5
    min_delta: Annotated[float, Field(ge=0)] = 0.0
    restore_best_weights: bool = True


class FitConfig(_Strict):
    epochs: PositiveInt | None = None  # the sum of [[phases]] epochs when there are phases
    monitor: str | None = None  # default: the task's (val_accuracy, val_mean_iou, ...)
    early_stopping: EarlyStopping | None = None
    verbose: Literal[0, 1, 2, "auto"] = "auto"


class RuntimeConfig(_Strict):
    """`backend`: the Keras backend the recipe trains on ("auto": KERAS_BACKEND's, TensorFlow
    unless set); zoo-train starts itself on it, and zoo.train checks the process runs it."""

    seed: int = 42
    backend: Literal["auto", "tensorflow", "jax", "torch"] = "auto"
    strategy: Literal["auto", "none", "mirrored", "multi_worker"] = "auto"
    precision: Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"] = "auto"
    jit_compile: Literal["auto"] | bool = "auto"

    @field_validator("strategy")
    @classmethod
    def _working_strategy(cls, name):
        if name == "multi_worker":
            # Two workers fail in fit with "Attempt to convert a value (PerReplica...)"
            # (keras-team/keras#20585, TF 2.16 onwards).
            raise ValueError(
                "'multi_worker' (TensorFlow's MultiWorkerMirroredStrategy) does not train "
                "Keras 3 models (keras-team/keras#20585); on one machine use 'mirrored' or "
                "'auto' (every local GPU); for several processes or machines, zoo-train "
                "--workers N or --coordinator HOST:PORT (Keras' distribution API on JAX)"
            )
        return name


class EvalConfig(_Strict):
    """How the eval split is scored beyond the task's metrics. faces: `target_far`, the false
    accept rate the verification threshold is calibrated at; `impostor_pairs`, the most
    impostor pairs scored (a seeded sample when there are more)."""

    target_far: Fraction = 0.01
    impostor_pairs: PositiveInt = 200_000


class PhaseConfig(_Strict):
    """One fine-tuning phase: `epochs` with only `trainable` layers trained, by a fresh optimizer.

    `trainable`: "all", "head" (the layers after the backbone's deepest tap), a tap level
    "P1".."P5" (the stage computing it and everything above), or a layer name or name prefix
    ("conv4", "block_13": that layer and everything above). `freeze_batchnorm` keeps every
    BatchNormalization layer frozen (inference mode) even where the rest trains, as small
    fine-tuning sets want. `learning_rate`, `schedule` and `loss` default to compile's (a faces
    recipe warms up with loss = "softmax" before its margin loss)."""

    epochs: PositiveInt
    trainable: Annotated[str, Field(min_length=1)] = "all"
    freeze_batchnorm: bool = False
    learning_rate: PositiveFloat | None = None
    schedule: Schedule | None = None
    loss: str | None = None


class Recipe(_Strict):
    """A whole recipe; `name` is the file's stem, set by the loader."""

    name: str
    description: Annotated[str, Field(min_length=1)]
    task: str
    model: ModelConfig
    data: DataConfig
    augment: list[AugmentLayer] = []
    compile: CompileConfig
    fit: FitConfig
    phases: list[PhaseConfig] = []
    eval: EvalConfig = EvalConfig()
    runtime: RuntimeConfig = RuntimeConfig()

    @field_validator("task")
    @classmethod
    def _known_task(cls, name):
        from zoo import tasks

        if name not in tasks.names():
            raise _unknown(name, tasks.names(), "task", "one module of zoo.tasks each")
        return name

    @model_validator(mode="after")
    def _task_rules(self):
        from zoo import tasks

        task = tasks.get(self.task)
        if task.TARGET not in SOURCE_TARGETS[self.data.source]:
            sources = [s for s, targets in SOURCE_TARGETS.items() if task.TARGET in targets]
            raise ValueError(
                f"data.source {self.data.source!r} gives {SOURCE_TARGETS[self.data.source][0]}, "
                f"task {self.task!r} trains on {task.TARGET}: use data.source "
                f"{' or '.join(map(repr, sources))}"
            )
        given = SOURCE_INPUTS[self.data.source]
        wanted = task.INPUT
        if wanted not in given:
            sources = [s for s, inputs in SOURCE_INPUTS.items() if wanted in inputs]
            raise ValueError(
                f"data.source {self.data.source!r} gives {given[0]}, task {self.task!r} "
                f"takes {wanted}: use data.source {' or '.join(map(repr, sources))}"
            )
        if wanted == "images" and not self.data.image_size:
            raise ValueError(f"task {self.task!r} takes images: set data.image_size")
        activation = self.model.args.get("classifier_activation", task.ACTIVATION)
        if activation != task.ACTIVATION:
            raise ValueError(
                f"model.args.classifier_activation {activation!r}: a {self.task} model ends in "
                f"{task.ACTIVATION!r}, which its loss expects (and a mixed-precision run "
                "applies in float32); leave classifier_activation out"
            )
        task.check(self)
        return self

    @model_validator(mode="after")
    def _epochs(self):
        total = sum(p.epochs for p in self.phases)
        if not self.phases and self.fit.epochs is None:
            raise ValueError("fit.epochs is required (or [[phases]], each with its epochs)")
        if self.phases and self.fit.epochs not in (None, total):
            raise ValueError(
                f"fit.epochs is {self.fit.epochs} but the phases add up to {total} epochs; "
                f"leave fit.epochs out or set it to {total}, or change the phases' epochs "
                "(--set 'phases=[{epochs=1, trainable=\"head\"}, {epochs=2}]')"
            )
        return self

    @model_validator(mode="after")
    def _backbone_input(self):
        from zoo.backbones import has_builtin_preprocessing

        label = self.model.label
        if has_builtin_preprocessing(label):
            if self.data.normalization != "none":
                raise ValueError(
                    f"{label} preprocesses [0, 255] pixels itself (its keras.applications "
                    f"family's preprocessing is part of the model): set data.normalization = "
                    f'"none" (it is {self.data.normalization!r})'
                )
            if self.data.channels != 3:
                raise ValueError(f"{label} takes RGB images: set data.channels = 3")
        return self

    @model_validator(mode="after")
    def _crops_fit(self):
        size = self.data.crop_size or self.data.image_size
        for k, a in enumerate(self.augment):
            if a.layer in COLOUR_LAYERS and self.data.channels != 3:
                raise ValueError(
                    f"augment.{k}: {a.layer} changes colours, and this recipe's images are "
                    f"grey (data.channels = {self.data.channels}): use data.channels = 3, or "
                    "leave the layer out"
                )
            if a.layer == "RandomCrop" and size:
                height, width = a.args.get("height", 0), a.args.get("width", 0)
                if not all(isinstance(v, int) and not isinstance(v, bool) for v in (height, width)):
                    raise ValueError(
                        f"augment.{k}: RandomCrop height and width must be whole numbers of "
                        f"pixels, received {height!r} and {width!r}"
                    )
                if height > size[0] or width > size[1]:
                    raise ValueError(
                        f"augment.{k}: RandomCrop {height}x{width} is larger than the "
                        f"{size[0]}x{size[1]} images it gets (data.image_size"
                        f"{' / data.crop_size' if self.data.crop_size else ''}); crop at most that"
                    )
        return self

    @model_validator(mode="after")
    def _monitors(self):
        from zoo import tasks

        logged = tasks.logged(self)
        stopping = self.fit.early_stopping
        for key, name in (
            ("fit.monitor", self.fit.monitor),
            ("fit.early_stopping.monitor", stopping.monitor if stopping else None),
        ):
            if name is not None and name not in logged:
                raise _unknown(
                    name, logged, f"{key} metric", f"{self.task} logs {', '.join(logged)}"
                )
        return self

    @property
    def epochs(self) -> int:
        """All epochs: fit.epochs, or the sum of the phases'."""
        return sum(p.epochs for p in self.phases) if self.phases else self.fit.epochs

    @property
    def monitor(self) -> str:
        """fit.monitor, or the task's default."""
        from zoo import tasks

        return self.fit.monitor or tasks.get(self.task).MONITOR

    def to_dict(self) -> dict:
        return self.model_dump(mode="json", exclude_none=True)
