"""The training curves of a run (curves.png); the task evaluates the model itself."""

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
