"""The run directory layout and atomic file writes (temp file, then rename)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

RECIPE = "recipe.toml"
MODEL = "model.keras"
HISTORY = "history.csv"
METRICS = "metrics.json"
CURVES = "curves.png"
CONFUSION = "confusion.png"
CHECKPOINTS = "checkpoints"
BACKUP = "checkpoints/backup"
BEST = "checkpoints/best.keras"
STATE = "checkpoints/state.json"
TENSORBOARD = "tensorboard"


def backup(phase: int) -> str:
    """BackupAndRestore's folder for fine-tuning phase `phase` (0-based; 0 for a plain run)."""
    return BACKUP if phase == 0 else f"{BACKUP}-phase{phase + 1}"


def phase_end(phase: int) -> str:
    """The model weights at the end of phase `phase` (0-based), kept until the run finishes."""
    return f"{CHECKPOINTS}/phase{phase + 1}-end.weights.h5"


@contextlib.contextmanager
def atomic_path(path: Path, suffix: str = ""):
    """Yields a temporary path beside `path`; renames it onto `path` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent
    )
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> dict:
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {}


def load(source, *, what: str = "this", compile: bool = True):
    """(model, recipe or None, run directory or None) of a finished run directory, a `.keras`
    file or a Keras model: the one loader of saved models.

    `what` names the caller's purpose in errors ("export", "weights", ...)."""
    import keras

    from zoo.errors import ZooError
    from zoo.recipes import load_recipe

    if isinstance(source, keras.Model):
        return source, None, None
    path = Path(source)
    if path.is_dir():
        if not (path / MODEL).is_file():
            raise ZooError(
                f"{path} holds no {MODEL}: {what} needs a finished zoo run directory "
                "(or a .keras file)"
            )
        saved = path / RECIPE
        file, recipe, run = path / MODEL, load_recipe(saved) if saved.is_file() else None, path
    elif path.suffix == ".keras" and path.is_file():
        file, recipe, run = path, None, None
    elif not path.exists():
        raise ZooError(f"{str(source)!r} does not exist: give a zoo run directory or a .keras file")
    else:
        raise ZooError(f"{what}: {str(source)!r} is neither a zoo run directory nor a .keras file")
    try:
        # Safe mode: a file runs no Python code of its own (Lambda layers' bytecode is refused).
        model = keras.saving.load_model(file, compile=compile, safe_mode=True)
    except Exception as e:  # Keras raises many types for a file that is not a model
        if "safe_mode" in str(e):
            raise ZooError(
                f"{file} holds Python code (a Lambda layer), which zoo does not run from a "
                "file: use a model without Lambda layers, or pass its weights (.weights.h5) "
                "to an architecture built in code"
            ) from e
        raise ZooError(f"could not load a Keras model from {file}: {e}".splitlines()[0]) from e
    return model, recipe, run


def save_model(model, path: Path) -> None:
    """`model.save` to `path`, replacing it only once written, as a file every Keras backend
    loads (see `backend_neutral`)."""
    with atomic_path(path) as tmp:
        model.save(tmp)
        backend_neutral(tmp)


def backend_neutral(path: Path) -> None:
    """Rewrites a .keras file's optimizer as Keras' own class where the backend saved its
    private subclass: on PyTorch, Keras' Adam and friends are
    keras.src.backend.torch.optimizers.torch_adam.Adam (same configuration and variables),
    which another backend cannot rebuild and which, where PyTorch is installed beside
    TensorFlow, crashes the loading process as it imports."""
    import zipfile

    path = Path(path)
    with zipfile.ZipFile(path) as source:
        config = json.loads(source.read("config.json"))

        def public(node):
            changed = False
            if isinstance(node, dict):
                module = node.get("module")
                if isinstance(module, str) and module.startswith("keras.src.backend."):
                    if ".optimizers." in module:
                        node["module"], changed = "keras.optimizers", True
                for value in node.values():
                    changed = public(value) or changed
            elif isinstance(node, list):
                for value in node:
                    changed = public(value) or changed
            return changed

        if not public(config):
            return
        with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as target:
            for item in source.infolist():
                data = source.read(item)
                if item.filename == "config.json":
                    data = json.dumps(config).encode()
                target.writestr(item, data)


LOCK = "zoo-train.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def locked(run: Path):
    """Holds `run`'s lock file (the owner's host and pid) while the block runs: a second
    zoo-train on the same directory stops with an error; a lock left by a process that died on
    this host is taken over."""
    import socket

    from zoo.errors import ZooError

    path = Path(run) / LOCK
    me = f"{socket.gethostname()} {os.getpid()}"
    for attempt in range(1000):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = path.read_text().split() if path.is_file() else []
            host, pid = (owner + ["", ""])[:2]
            if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            if not owner:  # being written this instant: look again; empty for long: stale
                if attempt >= 20:
                    path.unlink(missing_ok=True)
                time.sleep(0.05)
                continue
            raise ZooError(
                f"{run} is in use by another zoo-train (host {host}, pid {pid}); wait for it to "
                f"end or choose another --output (if that process is gone, delete {path})"
            ) from None
        with os.fdopen(fd, "w") as f:
            f.write(me + "\n")
        break
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
