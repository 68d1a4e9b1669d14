"""zoo's arcface_att_faces recipe beside eigenfaces on the same draws of unseen identities.

Each draw holds out 10 identities of an identity-per-folder dataset (AT&T's s1 ... s40): by
default the ones `runtime.seed` draws, for each `--seed`; `--eval-identities s3,s9,...` names
them instead (then each seed only changes the start, order and augmentation of training).
zoo trains the recipe on the other identities and verifies the held-out ones (ROC AUC, EER
from metrics.json). The peer is eigenfaces (Turk and Pentland 1991) on the same split: PCA
(50 components, scikit-learn) fitted on the training identities' pixels at the recipe's image
size, read as `zoo predict` reads them, and the held-out images scored by the cosine of their
components over all pairs, as zoo scores its embeddings. Prints one row per draw (and the
identities with the most errors at the run's threshold, from its identities.tsv), the means,
and zoo's share of draws that meet AUC >= 0.98 with EER <= 0.05.

    python benchmarks/faces.py DIR [--recipe arcface_att_faces] [--seed 42 --seed 1 ...]
        [--eval-identities s3,s9,...] [--set key=value ...] [--keep RUNS_DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def pixels(root: Path, identities, shape):
    """The identities' image files, as the image_folder source lists them, read as `zoo
    predict` reads them: (flat pixels, identity indices)."""
    from zoo.data.image_folder import list_images
    from zoo.predict import read_image

    files, labels = list_images(root, identities)
    return np.stack([read_image(path, shape).reshape(-1) for path in files]), labels


def eigenfaces(root: Path, train, held_out, shape, components=50, seed=0) -> dict:
    from sklearn.decomposition import PCA

    from zoo import verification

    x, _ = pixels(root, train, shape)
    ex, labels = pixels(root, held_out, shape)
    pca = PCA(n_components=min(components, len(x) - 1), random_state=seed).fit(x / 255.0)
    result = verification.scores(
        pca.transform(ex / 255.0), labels, target_far=1e-2, max_impostors=10**9, seed=seed
    )
    return {"roc_auc": result["roc_auc"], "eer": result["eer"]}


def zoo_recipe(root: Path, name: str, seed: int, identities, overrides, keep) -> dict:
    import zoo
    from zoo.verification import most_errors

    sets = [f"data.path='{root}'", f"runtime.seed={seed}", "fit.verbose=0", *overrides]
    if identities:
        sets.append(f"data.eval_identities={json.dumps(identities)}")
    recipe = zoo.load_recipe(name, sets)
    with tempfile.TemporaryDirectory() as out:
        folder = Path(keep) / f"{name}-seed{seed}" if keep else Path(out) / "run"
        start = time.perf_counter()
        run = zoo.train(recipe, output=folder, log=lambda *a, **k: None)
        seconds = time.perf_counter() - start
        metrics = json.loads((run / "metrics.json").read_text())
        hardest = most_errors(run)  # at the run's calibrated threshold
    shape = (*recipe.data.image_size, recipe.data.channels)
    return {
        "seconds": seconds,
        "roc_auc": metrics["roc_auc"],
        "eer": metrics["eer"],
        "train": metrics["classes"],
        "held_out": metrics["eval_identity_names"],
        "hardest": hardest,
        "shape": shape,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="one folder of images per identity")
    parser.add_argument("--recipe", default="arcface_att_faces", help="a faces recipe")
    parser.add_argument("--seed", type=int, action="append", help="runtime.seed (repeatable)")
    parser.add_argument("--eval-identities", help="comma-separated held-out identity folders")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--keep", help="write the run directories here")
    args = parser.parse_args()
    identities = args.eval_identities.split(",") if args.eval_identities else None
    rows = []
    print(f"{'seed':>5}  {'zoo AUC':>8} {'EER':>6}  {'eigenfaces AUC':>14} {'EER':>6}  seconds")
    for seed in args.seed or [42, 1, 2]:
        ours = zoo_recipe(args.folder, args.recipe, seed, identities, args.overrides, args.keep)
        theirs = eigenfaces(args.folder, ours["train"], ours["held_out"], ours["shape"])
        rows.append({"seed": seed, "zoo": ours, "eigenfaces": theirs})
        print(
            f"{seed:>5}  {ours['roc_auc']:>8.4f} {ours['eer']:>6.3f}  "
            f"{theirs['roc_auc']:>14.4f} {theirs['eer']:>6.3f}  {ours['seconds']:>7.1f}"
            f"  held out: {' '.join(ours['held_out'])}",
            flush=True,
        )
        if ours["hardest"]:
            print(f"       most errors: {'; '.join(ours['hardest'])}", flush=True)

    def mean(who, key):
        return float(np.mean([r[who][key] for r in rows]))

    print(
        f"{'mean':>5}  {mean('zoo', 'roc_auc'):>8.4f} {mean('zoo', 'eer'):>6.3f}  "
        f"{mean('eigenfaces', 'roc_auc'):>14.4f} {mean('eigenfaces', 'eer'):>6.3f}"
    )
    met = sum(r["zoo"]["roc_auc"] >= 0.98 and r["zoo"]["eer"] <= 0.05 for r in rows)
    print(f"zoo meets AUC >= 0.98 and EER <= 0.05 on {met} of {len(rows)} draws")
    for r in rows:
        del r["zoo"]["train"], r["zoo"]["shape"]
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
