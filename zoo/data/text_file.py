"""The `text_file` source: a TSV or CSV file of labelled texts (the SMS Spam Collection's
header-less `label<TAB>text`, or a file with a header naming its columns).

`data.path` is the file, or a folder holding `train.{tsv,csv,txt}` (and `test.*`, the eval
split) or exactly one such file (split by a stratified, seeded `data.validation_split`).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from zoo.data import text
from zoo.data.common import Source
from zoo.errors import ZooError

SUFFIXES = (".tsv", ".csv", ".txt")


def files(path: str, train_split: str, eval_split: str | None) -> tuple[Path, Path | None]:
    """The training file and the eval file (None where there is none)."""
    root = Path(path).expanduser()
    if root.is_file():
        return root, None
    if not root.is_dir():
        raise ZooError(
            f"data.path {path!r} does not exist; give a TSV/CSV file of label and text "
            "columns, or a folder holding one"
        )

    def named(stem):
        found = [root / f"{stem}{s}" for s in SUFFIXES if (root / f"{stem}{s}").is_file()]
        return found[0] if found else None

    train = named(train_split)
    if train is not None:
        return train, named(eval_split) if eval_split else None
    found = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
    if len(found) != 1:
        what = ", ".join(p.name for p in found) if found else "none"
        raise ZooError(
            f"data.path {path!r} should hold {train_split}.tsv (or .csv) or exactly one "
            f".tsv/.csv/.txt file; it holds {what}. Point data.path at the file"
        )
    return found[0], None


def _column(spec, header: list[str] | None, path: Path, key: str) -> int:
    if isinstance(spec, int):
        return spec
    if header is None:
        raise ZooError(
            f"data.{key} {spec!r} names a column but {path} is read without a header line "
            "(data.header = false): give the column's index (0 = first)"
        )
    if spec not in header:
        raise ZooError(
            f"data.{key} {spec!r} is not a column of {path}; its header has "
            f"{', '.join(map(repr, header))}"
        )
    return header.index(spec)


def read(path: Path, cfg) -> tuple[list[str], list[str]]:
    """(labels, texts) of every row of `path`."""
    delimiter = cfg.delimiter or ("," if path.suffix.lower() == ".csv" else "\t")
    header = cfg.header
    if header is None:
        header = isinstance(cfg.label_column, str) or isinstance(cfg.text_column, str)
    content = text.decode(path.read_bytes(), path, cfg.encoding).removeprefix("\ufeff")  # BOM
    # Tab-separated files quote nothing (an SMS may start with a quote); CSV quotes fields.
    # Rows end at line breaks only (str.splitlines would also split at form feeds and other
    # separators inside a text).
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    rows = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter, quoting=quoting)
    names = None
    if header:
        names = next(rows, None)
        if names is None:
            raise ZooError(f"{path} is empty; it should hold a header line and labelled texts")
    label_at = _column(cfg.label_column, names, path, "label_column")
    text_at = _column(cfg.text_column, names, path, "text_column")
    labels, texts = [], []
    for row in rows:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if len(row) <= max(label_at, text_at):
            raise ZooError(
                f"{path}, line {rows.line_num}: {len(row)} column(s) split by "
                f"{delimiter!r}, but data.label_column and data.text_column are columns "
                f"{label_at} and {text_at}; set data.delimiter or the columns"
            )
        label = row[label_at].strip()
        if not label:
            raise ZooError(f"{path}, line {rows.line_num}: the label column is empty")
        labels.append(label)
        texts.append(row[text_at])
    if not labels:
        raise ZooError(f"{path} holds no labelled texts")
    return labels, texts


def load(cfg, target: str, seed: int) -> Source:
    train_file, test_file = files(cfg.path, cfg.train_split, cfg.eval_split)
    labels, texts = read(train_file, cfg)
    names = sorted(set(labels))
    if len(names) < 2:
        raise ZooError(f"{train_file} has one label only ({names[0]!r}); a classifier needs two")
    train = (texts, text.class_ids(labels, names, str(train_file)))
    test = None
    if test_file is not None:
        test_labels, test_texts = read(test_file, cfg)
        test = (test_texts, text.class_ids(test_labels, names, str(test_file)))
    return text.source(cfg, train, test, names, seed)
