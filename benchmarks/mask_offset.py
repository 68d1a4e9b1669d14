"""How far a folder's masks sit from the structures they trace, for dark structures on a
lighter ground (EM membranes): the shift of each mask's class-0 pixels that best overlays the
image's darkest pixels, whole pixels per slice and a sub-pixel estimate over all of them.

A fixed offset between masks and images is learnt by a net trained without flips; a flip
mirrors it, so a net trained with flips can learn neither direction (unet_membrane's reason
for training without them).

    python benchmarks/mask_offset.py DIR [--images image] [--masks label] [--reach 3]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def darkness(image: np.ndarray) -> np.ndarray:
    """The image standardised and negated: dark pixels score high."""
    return -(image - image.mean()) / (image.std() or 1.0)


def overlap(dark: np.ndarray, traced: np.ndarray, dy: int, dx: int, margin: int) -> float:
    """Mean darkness under the traced pixels shifted by (dy, dx)."""
    moved = np.roll(traced, (dy, dx), axis=(0, 1))
    inner = (slice(margin, -margin), slice(margin, -margin))
    return float(np.mean(moved[inner] * dark[inner]))


def vertex(left: float, middle: float, right: float) -> float:
    """Sub-pixel peak of a parabola through three equally spaced values."""
    bend = left - 2 * middle + right
    return 0.0 if bend == 0 else (left - right) / (2 * bend)


def main(argv=None) -> None:
    from PIL import Image

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a folder with the images and masks folders")
    parser.add_argument("--images", default="image")
    parser.add_argument("--masks", default="label")
    parser.add_argument("--reach", type=int, default=3, help="largest shift tried, in pixels")
    args = parser.parse_args(argv)
    reach, margin = args.reach, args.reach + 1
    shifts = range(-reach, reach + 1)
    rows, cols, best = {s: [] for s in shifts}, {s: [] for s in shifts}, []
    paths = sorted((args.folder / args.images).iterdir(), key=lambda p: p.stem)
    if not paths:
        raise SystemExit(f"no images in {args.folder / args.images}")
    for path in paths:
        dark = darkness(np.asarray(Image.open(path).convert("L"), np.float32))
        mask = np.asarray(Image.open(args.folder / args.masks / path.name).convert("L"))
        traced = (mask < 128).astype(np.float32)
        for s in shifts:
            rows[s].append(overlap(dark, traced, s, 0, margin))
            cols[s].append(overlap(dark, traced, 0, s, margin))
        best.append(max(shifts, key=lambda s: rows[s][-1]))
    mean = {
        "dy": {s: np.mean(rows[s]) for s in shifts},
        "dx": {s: np.mean(cols[s]) for s in shifts},
    }
    for axis, values in mean.items():
        peak = vertex(values[-1], values[0], values[1])
        print(f"{axis}: best whole shift {max(values, key=values.get):+d}, sub-pixel {peak:+.2f}")
    print(f"best dy per slice ({len(paths)}): {best}")
    print("a positive dy moves the masks down onto the dark structures (they sit above them)")


if __name__ == "__main__":
    main()
