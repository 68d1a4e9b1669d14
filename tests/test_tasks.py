"""The task seam: every module of zoo.tasks passes one contract (see zoo/tasks/__init__.py)."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest

from tests.conftest import count_traces
from zoo import tasks
from zoo.export import QUANTIZATIONS
from zoo.recipes import list_recipes, load_recipe

FUNCTIONS = (
    "model_input",
    "serving",
    "check",
    "net",
    "trainer",
    "encode",
    "finish",
    "loss",
    "metrics",
    "evaluate",
    "summary",
    "parity",
    "describe_parity",
    "present",
    "describe",
)


def _outputs(task, rng) -> np.ndarray:
    """Four made-up model outputs of the task's shape (probabilities, or unit vectors)."""
    rank = task.OUTPUT_RANK or 2
    shape = {2: (4, 3), 4: (4, 8, 8, 3)}[rank]
    x = rng.uniform(0.01, 1, shape)
    if task.ACTIVATION == "softmax":
        return x / x.sum(-1, keepdims=True)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("name", tasks.names())
def test_task_module_contract(name, tmp_path):
    task = tasks.get(name)
    assert task.INPUT in ("images", "texts")
    assert isinstance(task.TARGET, str) and task.TARGET in ("labels", "segmentation_masks")
    assert isinstance(task.MONITOR, str) and isinstance(task.VALIDATE, bool)
    assert task.ACTIVATION in ("softmax", "linear")
    assert task.OUTPUT_RANK is None or task.OUTPUT_RANK in (2, 4)
    assert set(task.TOLERANCE) == set(QUANTIZATIONS)
    assert all(0 < v <= 1 for v in task.TOLERANCE.values())
    assert task.PARITY_EXAMPLES is None or task.PARITY_EXAMPLES > 0
    assert issubclass(task.Head, pydantic.BaseModel)
    task.Head()  # every head key has a default
    for fn in FUNCTIONS:
        assert callable(getattr(task, fn)), fn
    assert task.summary(tmp_path) == []  # a run directory without a file to summarise
    # An export identical to Keras agrees fully; a perturbed one less.
    rng = np.random.default_rng(0)
    reference = _outputs(task, rng)
    same = task.parity(reference, reference.copy(), None, None)
    assert same[task.AGREEMENT] == pytest.approx(1.0)
    assert same["max_abs_diff"] == 0.0 and same["examples"] == 4
    other = task.parity(reference, _outputs(task, rng), None, None)
    assert other[task.AGREEMENT] < 1.0
    rows = task.describe_parity({**same, "tolerance": task.TOLERANCE["none"]})
    assert rows and all(isinstance(k, str) and isinstance(v, str) for k, v in rows)
    # What `zoo predict` gives for each image (or text: here the file names), and prints.
    from PIL import Image

    images = []
    for k in range(4):
        images.append(str(tmp_path / f"image{k}.png"))
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(images[-1])
    pixels = [rng.uniform(0, 255, (8, 8, 1)).astype("float32")] * 4
    results = task.present(
        images,
        list(reference),
        ["a", "b", "c"],
        top_k=2,
        output=tmp_path,
        recipe=None,
        pixels=pixels,
    )
    key = "text" if task.INPUT == "texts" else "image"
    assert [r[key] for r in results] == images and all(r["task"] == name for r in results)
    assert all(isinstance(line, str) for r in results for line in task.describe(r))


@pytest.mark.parametrize("name", tasks.names())
def test_every_task_has_a_shipped_recipe_its_check_accepts(name):
    shipped = [r for r in list_recipes() if load_recipe(r).task == name]
    assert shipped, f"no shipped recipe for task {name}"
    for recipe in shipped:
        tasks.get(name).check(load_recipe(recipe))


def test_unknown_task_is_a_clear_error():
    from zoo.errors import ZooError

    with pytest.raises(ZooError, match="task"):
        tasks.get("detection")


def test_predictions_trace_once_and_drop_the_padding_of_the_last_batch():
    """The tasks' evaluations predict batch by batch: the last, smaller batch is padded to the
    first one's size, so Keras traces its predict step once, and its rows come back alone."""
    import keras
    import tensorflow as tf

    from zoo.tasks._common import predictions

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    traces = count_traces(model)
    x = np.arange(21, dtype="float32").reshape(7, 3)
    dataset = tf.data.Dataset.from_tensor_slices((x, np.arange(7))).batch(3)
    out = list(predictions(model, dataset))
    assert [len(p) for _, _, p in out] == [3, 3, 1] and len(traces) == 1
    assert np.concatenate([y for _, y, _ in out]).tolist() == list(range(7))
    expected = x @ model.layers[0].kernel.numpy() + model.layers[0].bias.numpy()
    np.testing.assert_allclose(np.concatenate([p for _, _, p in out]), expected, rtol=1e-5)
