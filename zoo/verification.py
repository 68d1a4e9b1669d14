"""Open-set face verification: pairs of eval images, cosine similarities, ROC AUC, EER, TAR at
a FAR, LFW-style 10-fold verification accuracy, the threshold calibrated at a target FAR, rank-1
identification; and `embed`, `verify`, `identify` on image files with any saved model.

A pair is genuine when both images show one identity, an impostor pair otherwise; a pair is
accepted (same person) when its similarity is at least the threshold. The false accept rate
(FAR) is the fraction of impostor pairs accepted, the true accept rate (TAR) that of genuine
pairs.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from zoo import rundir
from zoo.errors import ZooError

VERIFICATION = "verification.json"  # the calibrated threshold, beside model.keras
ROC = "roc.png"
SIMILARITIES = "similarities.png"
IDENTITIES = "identities.tsv"  # each eval identity's errors at the calibrated threshold
FARS = (1e-2, 1e-3)


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (exported models may lose a little of it)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def pairs(labels: np.ndarray, max_impostors: int, seed: int) -> tuple[np.ndarray, ...]:
    """(first, second, genuine) index arrays: every genuine pair, and every impostor pair or a
    seeded sample of `max_impostors` of them."""
    labels = np.asarray(labels)
    first, second = np.triu_indices(len(labels), k=1)
    genuine = labels[first] == labels[second]
    impostor = np.flatnonzero(~genuine)
    if len(impostor) > max_impostors:
        rng = np.random.default_rng(seed)
        impostor = np.sort(rng.choice(impostor, max_impostors, replace=False))
    keep = np.concatenate([np.flatnonzero(genuine), impostor])
    keep.sort()
    return first[keep], second[keep], genuine[keep]


def similarities(embeddings: np.ndarray, first, second) -> np.ndarray:
    e = unit(embeddings)
    return np.sum(e[first] * e[second], axis=1)


def threshold_at_far(scores: np.ndarray, genuine: np.ndarray, far: float) -> tuple[float, float]:
    """(threshold, TAR): the lowest threshold whose FAR is at most `far`, and the TAR there."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(genuine, scores, drop_intermediate=False)
    best = np.flatnonzero(fpr <= far)[-1]
    # roc_curve's first threshold is +inf (nothing accepted): say "above the top score".
    threshold = (
        thresholds[best] if np.isfinite(thresholds[best]) else np.nextafter(np.max(scores), np.inf)
    )
    return float(threshold), float(tpr[best])


def equal_error_rate(scores: np.ndarray, genuine: np.ndarray) -> float:
    """The rate where the false accept and false reject rates meet (their mean at the
    threshold where they are closest)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(genuine, scores, drop_intermediate=False)
    fnr = 1 - tpr
    k = int(np.argmin(np.abs(fpr - fnr)))
    return float((fpr[k] + fnr[k]) / 2)


def best_threshold(scores: np.ndarray, genuine: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy) of the threshold that classifies the pairs best."""
    order = np.argsort(scores, kind="stable")
    s, g = scores[order], genuine[order].astype(np.int64)
    # Accepting s[k:]: genuine pairs above k are right, impostor pairs below k are right.
    genuine_above = np.concatenate([np.cumsum(g[::-1])[::-1], [0]])
    impostor_below = np.concatenate([[0], np.cumsum(1 - g)])
    correct = genuine_above + impostor_below
    # Only cut between different scores.
    cuts = np.concatenate([[True], s[1:] != s[:-1], [True]])
    correct = np.where(cuts, correct, -1)
    k = int(np.argmax(correct))
    if k == 0:
        threshold = s[0] - 1e-6
    elif k == len(s):
        threshold = s[-1] + 1e-6
    else:
        threshold = (s[k - 1] + s[k]) / 2
    return float(threshold), float(correct[k] / len(s))


def verification_accuracy(
    scores: np.ndarray, genuine: np.ndarray, seed: int, folds: int = 10
) -> tuple[float, float, int]:
    """LFW's protocol: as many impostor pairs as genuine ones (a seeded sample), 10 folds; each
    fold is scored with the threshold best on the other nine. (mean accuracy, its standard
    deviation, pairs used)."""
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(genuine), np.flatnonzero(~genuine)
    n = min(len(pos), len(neg))
    keep = np.concatenate([rng.choice(pos, n, replace=False), rng.choice(neg, n, replace=False)])
    s, g = scores[keep], genuine[keep]
    folds = min(folds, n)
    if folds < 2:
        return float("nan"), float("nan"), len(keep)
    accuracies = []
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(s, g):
        threshold, _ = best_threshold(s[train], g[train])
        accuracies.append(float(np.mean((s[test] >= threshold) == g[test])))
    return float(np.mean(accuracies)), float(np.std(accuracies)), len(keep)


def identification(embeddings: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
    """Closed-set rank-1 accuracy: the first image of each identity is its gallery entry, the
    others are probes matched to the most similar gallery entry. (accuracy, probes)."""
    labels = np.asarray(labels)
    _, first = np.unique(labels, return_index=True)
    gallery = np.zeros(len(labels), bool)
    gallery[first] = True
    if gallery.all():
        return float("nan"), 0
    e = unit(embeddings)
    best = np.argmax(e[~gallery] @ e[gallery].T, axis=1)
    return float(np.mean(labels[gallery][best] == labels[~gallery])), int((~gallery).sum())


def far_key(far: float) -> str:
    return f"tar_at_far_{far:g}"


def scores(embeddings, labels, *, target_far: float, max_impostors: int, seed: int) -> dict:
    """Every verification and identification number of an eval split's embeddings, with the
    pairs' scores (`_scores`, `_genuine`, and `_pairs`: their images' indices) for the plots
    and `identity_errors`."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    first, second, genuine = pairs(labels, max_impostors, seed)
    if genuine.all() or not genuine.any():
        raise ZooError(
            "verification needs genuine and impostor pairs: the eval identities need at least "
            "two identities and one of them at least two images"
        )
    s = similarities(embeddings, first, second)
    impostors = int((~genuine).sum())
    out = {
        "genuine_pairs": int(genuine.sum()),
        "impostor_pairs": impostors,
        "roc_auc": float(roc_auc_score(genuine, s)),
        "eer": equal_error_rate(s, genuine),
    }
    notes = []
    for far in FARS:
        if impostors * far >= 1:
            out[far_key(far)] = threshold_at_far(s, genuine, far)[1]
        else:
            notes.append(
                f"TAR at FAR {far:g} needs at least {math.ceil(1 / far)} impostor pairs; "
                f"there are {impostors}"
            )
    accuracy, spread, used = verification_accuracy(s, genuine, seed)
    out.update(
        verification_accuracy=accuracy, verification_accuracy_std=spread, verification_pairs=used
    )
    threshold, tar = threshold_at_far(s, genuine, target_far)
    achieved = float(np.mean(s[~genuine] >= threshold))
    out.update(threshold=threshold, target_far=target_far, far_at_threshold=achieved)
    out["tar_at_threshold"] = tar
    if impostors * target_far < 1:
        notes.append(
            f"the threshold at FAR {target_far:g} rests on {impostors} impostor pairs: it accepts "
            "none of them"
        )
    rank1, probes = identification(embeddings, labels)
    out.update(identification_rank1=rank1, identification_probes=probes)
    if notes:
        out["notes"] = notes
    return {**out, "_scores": s, "_genuine": genuine, "_pairs": (first, second)}


def identity_errors(s, genuine, first, second, labels, names, threshold: float) -> list[dict]:
    """Each identity's share of the errors at `threshold`, most errors first: its genuine
    pairs rejected, the impostor pairs it is in accepted, and the identity it is accepted
    with most often. A few identities (two sittings, glasses on and off, look-alikes) usually
    make most of a split's errors."""
    labels = np.asarray(labels)
    ids = np.unique(labels)
    size = int(ids.max()) + 1
    accepted = np.asarray(s) >= threshold
    a, b = labels[first], labels[second]
    impostor = ~genuine

    def count(*sides):
        return sum(np.bincount(side, minlength=size) for side in sides)

    hits = impostor & accepted
    # Each accepted impostor pair from both sides: (identity, the other), counted.
    taken = np.stack([np.r_[a[hits], b[hits]], np.r_[b[hits], a[hits]]], axis=1)
    with_whom, times = np.unique(taken, axis=0, return_counts=True)
    columns = {
        "images": count(labels),
        "genuine_pairs": count(a[genuine]),
        "rejected": count(a[genuine & ~accepted]),
        "impostor_pairs": count(a[impostor], b[impostor]),
        "accepted": count(taken[:, 0]),
    }

    def name(k):
        return str(names[k]) if names is not None and k < len(names) else str(k)

    rows = []
    for k in ids:
        row = {"identity": name(k), **{key: int(c[k]) for key, c in columns.items()}}
        mine = with_whom[:, 0] == k
        row["accepted_most_with"], row["accepted_with_it"] = "", 0
        if mine.any():  # the first of the most frequent, by label
            best = np.argmax(times[mine])
            row["accepted_most_with"] = name(with_whom[mine][best, 1])
            row["accepted_with_it"] = int(times[mine][best])
        rows.append(row)
    rows.sort(key=lambda r: -(r["rejected"] + r["accepted"]))  # stable: ties keep label order
    return rows


def write_identity_errors(path: Path, rows: list[dict]) -> None:
    """`identity_errors`' rows as a tab-separated file with a header (csv's quoting keeps a
    name with a tab or a quote in one cell)."""
    text = io.StringIO()
    if rows:
        table = csv.DictWriter(text, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
        table.writeheader()
        table.writerows(rows)
    rundir.write_text(path, text.getvalue() or "\n")


def most_errors(run, shown: int = 3) -> list[str]:
    """The identities with the most errors in a run's identities.tsv, in words (none where
    the run has no such file or no errors)."""
    path = Path(run) / IDENTITIES
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [
        f"{r['identity']} ({r['rejected']} of {r['genuine_pairs']} genuine pairs rejected, "
        f"{r['accepted']} impostor pairs accepted)"
        for r in rows[:shown]
        if int(r["rejected"]) + int(r["accepted"])
    ]


def plot(s: np.ndarray, genuine: np.ndarray, threshold: float, target_far: float, run: Path):
    """roc.png (TAR against FAR, log FAR axis) and similarities.png (the two histograms)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(genuine, s)
    fig, ax = plt.subplots(figsize=(5, 4))
    floor = 1 / max(int((~genuine).sum()), 1)
    ax.plot(np.maximum(fpr, floor), tpr)
    ax.axvline(target_far, color="grey", linestyle="--", label=f"target FAR {target_far:g}")
    ax.set(xscale="log", xlabel="false accept rate", ylabel="true accept rate", ylim=(0, 1.01))
    ax.set_title("ROC on the eval identities")
    ax.legend(loc="lower right")
    fig.tight_layout()
    with rundir.atomic_path(run / ROC) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 4))
    bins = np.linspace(-1, 1, 81)
    ax.hist(s[~genuine], bins, alpha=0.6, density=True, label="impostor pairs")
    ax.hist(s[genuine], bins, alpha=0.6, density=True, label="genuine pairs")
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set(xlabel="cosine similarity", ylabel="density")
    ax.legend(loc="upper left")
    fig.tight_layout()
    with rundir.atomic_path(run / SIMILARITIES) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Embeddings of image files, with any saved form of an embedding model


def _run_of(path: Path) -> Path | None:
    """The run directory a model belongs to (the run itself, its model, its exports)."""
    for folder in (path, path.parent, path.parent.parent):
        if (folder / rundir.RECIPE).is_file():
            return folder
    return None


def calibrated_threshold(model) -> dict | None:
    """The run's verification.json ({"threshold", "target_far", ...}), or None."""
    run = _run_of(Path(model))
    if run is None or not (run / VERIFICATION).is_file():
        return None
    return rundir.read_json(run / VERIFICATION)


def embed(model, images) -> np.ndarray:
    """Unit-length embeddings (N, dim) of image files with an embedding model: a faces run
    directory, its .keras file or an export.

    Example:

    ```python
    vectors = zoo.embed("runs/faces", ["a.png", "b.png"])
    similarity = float(vectors[0] @ vectors[1])
    ```
    """
    from zoo.predict import load, read_image

    images = [images] if isinstance(images, str | Path) else list(images)
    if not images:
        raise ZooError("no images to embed")
    fn, shape, _, recipe = load(model)
    if recipe is not None and recipe.task != "faces":
        raise ZooError(
            f"{model} is a {recipe.task} model ({recipe.name}), whose outputs are not "
            "embeddings: embed with a faces run or its exports"
        )
    pixels = [read_image(p, shape) for p in images]
    if None in shape[:2]:
        out = [np.asarray(fn(p[None]))[0] for p in pixels]
    else:
        out = list(np.asarray(fn(np.stack(pixels))))
    vectors = np.stack(out)
    if vectors.ndim != 2:
        raise ZooError(
            f"{model} gives outputs of shape {vectors.shape[1:]}, not embedding vectors: "
            "verify with a faces run or its exports"
        )
    return unit(vectors).astype(np.float32)


def verify(model, first, second, threshold: float | None = None) -> dict:
    """Whether two face images show one person: their cosine similarity against the run's
    calibrated threshold (or `threshold`).

    Example:

    ```python
    zoo.verify("runs/faces", "a.png", "b.png")  # {"similarity": 0.81, "same": True, ...}
    ```
    """
    calibrated = calibrated_threshold(model)
    if threshold is None:
        if calibrated is None:
            raise ZooError(
                f"{model} has no calibrated threshold (the {VERIFICATION} a faces run writes); "
                "verify with the run directory or one of its exports, or pass a threshold"
            )
        threshold, far = float(calibrated["threshold"]), calibrated.get("target_far")
        tar = calibrated.get("tar_at_threshold")  # runs before it was kept: absent
    else:
        far = tar = None
    a, b = embed(model, [first, second])
    similarity = float(np.dot(a, b))
    return {
        "first": str(first),
        "second": str(second),
        "similarity": similarity,
        "threshold": float(threshold),
        "target_far": far,
        "tar_at_threshold": tar,
        "same": similarity >= threshold,
    }


def gallery(folder) -> tuple[list[str], list[str]]:
    """(image files, identity of each) of a folder with one sub-folder of images per identity."""
    from zoo.data.common import IMAGE_FORMATS
    from zoo.data.image_folder import class_folders, list_images

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ZooError(
            f"gallery {str(folder)!r} is not a folder; it should hold <identity>/<images>"
        )
    names = class_folders(root)
    files, labels = list_images(root, names)
    if not files:
        raise ZooError(
            f"gallery {root} holds no identities: expected one sub-folder of images "
            f"({', '.join(sorted(IMAGE_FORMATS))}) per identity"
        )
    return files, [names[i] for i in labels]


def identify(model, image, gallery_dir, top_k: int = 5) -> dict:
    """The gallery's identities ranked by cosine similarity to `image` (each identity's mean
    embedding, normalised), with the run's threshold saying whether the best is a match.

    Example:

    ```python
    zoo.identify("runs/faces", "probe.png", "gallery/")["matches"][0]["identity"]
    ```
    """
    files, identities = gallery(gallery_dir)
    vectors = embed(model, [image, *files])
    probe, rest = vectors[0], vectors[1:]
    names = sorted(set(identities))
    index = np.asarray([names.index(i) for i in identities])
    centres = unit(np.stack([rest[index == k].mean(0) for k in range(len(names))]))
    sims = centres @ probe
    order = np.argsort(-sims)[:top_k]
    calibrated = calibrated_threshold(model)
    threshold = float(calibrated["threshold"]) if calibrated else None
    return {
        "image": str(image),
        "threshold": threshold,
        "match": (
            names[order[0]] if threshold is not None and sims[order[0]] >= threshold else None
        ),
        "matches": [
            {"identity": names[k], "similarity": float(sims[k]), "images": int((index == k).sum())}
            for k in order
        ],
    }


def write_threshold(run: Path, metrics: dict, dim: int) -> None:
    rundir.write_json(
        run / VERIFICATION,
        {
            "threshold": metrics["threshold"],
            "target_far": metrics["target_far"],
            "far_at_threshold": metrics["far_at_threshold"],
            # the share of the eval identities' genuine pairs the threshold accepts
            "tar_at_threshold": metrics["tar_at_threshold"],
            "similarity": "cosine",
            "embedding_dim": int(dim),
        },
    )
