"""The training curves of a run (curves.png), and the class report and confusion matrix
(confusion.png) of the tasks that classify; each task evaluates the model itself."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from zoo import rundir


def read_history(path: Path) -> list[dict]:
    """The rows of history.csv; empty cells and CSVLogger's "NA" (val_ columns of a run
    without validation) left out."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [
            {k: float(v) for k, v in row.items() if v not in ("", "NA")}
            for row in csv.DictReader(f)
        ]


def plot_curves(history_csv: Path, out: Path) -> bool:
    """Loss and each metric per epoch, train beside validation. False when there is no history."""
    rows = read_history(history_csv)
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k for k in rows[0] if k not in ("epoch", "learning_rate") and not k.startswith("val_")]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    epochs = [int(r["epoch"]) + 1 for r in rows]
    for ax, name in zip(axes[0], names, strict=True):
        for key, label in ((name, "train"), (f"val_{name}", "eval")):
            values = [r.get(key, math.nan) for r in rows]
            if not all(math.isnan(v) for v in values):
                ax.plot(epochs, values, marker="o", markersize=3, label=label)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with rundir.atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return True


def metric_key(name: str) -> str:
    """A class name as part of a metrics.json key ("No Entry" -> "no_entry")."""
    import re

    return re.sub(r"\W+", "_", name).strip("_").lower() or "class"


def class_report(labels, probabilities, names: list[str]) -> tuple[dict, object]:
    """Per-class and macro precision, recall and F1, accuracy, and ROC AUC of two-class data
    (the second class as positive), as flat metrics; and the confusion matrix (rows: true
    class, columns: predicted)."""
    import numpy as np
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predicted = probabilities.argmax(axis=1)
    ids = list(range(len(names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=ids, zero_division=0
    )
    out = {"accuracy": float((predicted == labels).mean())}
    for k, name in enumerate(names):
        key = metric_key(name)
        out[f"precision_{key}"] = float(precision[k])
        out[f"recall_{key}"] = float(recall[k])
        out[f"f1_{key}"] = float(f1[k])
        out[f"support_{key}"] = int(support[k])
    out["macro_precision"] = float(precision.mean())
    out["macro_recall"] = float(recall.mean())
    out["macro_f1"] = float(f1.mean())
    if len(names) == 2 and len(set(labels.tolist())) == 2:
        out["roc_auc"] = float(roc_auc_score(labels, probabilities[:, 1]))
    return out, confusion_matrix(labels, predicted, labels=ids)


def plot_confusion(matrix, names: list[str], out: Path) -> None:
    """The confusion matrix as counts, shaded by the fraction of each true class."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix)
    fractions = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = min(2 + 0.5 * len(names), 20)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
    ticks = range(len(names))
    ax.set_xticks(ticks, names, rotation=90 if len(names) > 6 else 0)
    ax.set_yticks(ticks, names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(names) <= 30:
        for i in ticks:
            for j in ticks:
                ax.text(
                    j,
                    i,
                    str(matrix[i, j]),
                    ha="center",
                    va="center",
                    color="white" if fractions[i, j] > 0.5 else "black",
                    fontsize=8,
                )
    ax.set_title(f"confusion matrix ({int(matrix.sum())} examples)")
    fig.tight_layout()
    with rundir.atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
