import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The start of a line of TensorFlow's C++ logging (absl's format: "E0000 00:00:1796146968...").
TF_LOG_LINE = re.compile(r"[IWEF]\d{4} \d\d:\d\d:")


def run_as_user(command: str, *args: str) -> subprocess.CompletedProcess:
    """One of this environment's console scripts (zoo, zoo-train) in a fresh process, as a
    user runs it: without the TF_CPP_MIN_LOG_LEVEL the tests set."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [str(Path(sys.executable).parent / command), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def shared_data(name: str) -> Path:
    """A folder of the real datasets in $ZOO_TEST_DATA. Where the variable is set (CI sets it)
    a missing folder is a failure, never a silent skip; where it is not set, the test skips."""
    root = os.environ.get("ZOO_TEST_DATA")
    if not root:
        pytest.skip("ZOO_TEST_DATA is not set: real-data test skipped (CI sets it)")
    path = Path(root) / name
    if not path.is_dir():
        pytest.fail(f"ZOO_TEST_DATA={root} has no {name}/ folder")
    return path


def count_traces(model) -> list:
    """A list that grows by one each time `model.call` runs in Python: once per trace of a
    compiled step (a traced function calls the model's graph, not its Python)."""
    traces = []
    call = model.call

    def counted(*args, **kwargs):
        traces.append(1)
        return call(*args, **kwargs)

    model.call = counted
    return traces


@pytest.fixture
def quiet():
    """Silences zoo's progress lines in tests."""
    return lambda *a, **k: None


@pytest.fixture
def mock_tfds(monkeypatch):
    """TFDS mock data in place of downloads (tfds.testing mocks download_and_prepare too)."""
    import tensorflow_datasets as tfds

    from zoo.data import tfds_source

    monkeypatch.setattr(tfds_source, "_can_download", lambda: True)
    return tfds.testing.mock_data
