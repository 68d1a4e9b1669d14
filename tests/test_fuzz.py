"""Mutated recipes (wrong types, unknown keys, out-of-range values, missing tables, odd
strings): each is refused with exit 2, one line starting with `error:` and no traceback, and
leaves no run directory; a mutation that is still a valid recipe reaches `fit` (stopped here)
and leaves none either. `make test` runs a fixed, short draw; `make test-all` a longer one."""

from __future__ import annotations

import copy
import tomllib

import keras
import pytest
import tomli_w
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zoo_cli
from zoo.recipes.loader import builtin_dir

BASE = tomllib.loads((builtin_dir() / "lenet_digits.toml").read_text())


def _paths(table, prefix=()):
    for key, value in table.items():
        yield (*prefix, key)
        if isinstance(value, dict):
            yield from _paths(value, (*prefix, key))


PATHS = sorted(_paths(BASE))


def _get(table, path):
    for key in path:
        table = table[key]
    return table


TABLES = [()] + [p for p in PATHS if isinstance(_get(BASE, p), dict)]
KEY = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
ODD = st.one_of(
    st.integers(-(10**9), 10**9),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30),
    st.sampled_from(["", " ", "none", "../../nowhere", "imagenet", "adam", "-1", "1e9"]),
    st.lists(st.integers(-3, 40), max_size=4),
    st.dictionaries(KEY, st.integers(-3, 3), max_size=2),
)
MUTATION = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(PATHS), ODD),
    st.tuples(st.just("drop"), st.sampled_from(PATHS), st.none()),
    st.tuples(st.just("add"), st.sampled_from(TABLES), st.tuples(KEY, ODD)),
)


def mutate(recipe: dict, mutations) -> dict:
    out = copy.deepcopy(recipe)
    for kind, path, value in mutations:
        try:
            parent = _get(out, path[:-1]) if kind != "add" else _get(out, path)
        except (KeyError, TypeError):
            continue  # an earlier mutation replaced or dropped the table
        if not isinstance(parent, dict):
            continue
        if kind == "set":
            parent[path[-1]] = value
        elif kind == "drop":
            parent.pop(path[-1], None)
        else:
            parent[value[0]] = value[1]
    return out


class ReachedFit(Exception):
    """A mutated recipe that is still valid got as far as training."""


def check(tmp_path, mutations):
    recipe = mutate(BASE, mutations)
    path = tmp_path / "mutated.toml"
    path.write_text(tomli_w.dumps(recipe))
    out = tmp_path / "run"
    result = CliRunner().invoke(
        zoo_cli.main, ["train", str(path), "--output", str(out)], prog_name="zoo"
    )
    if not isinstance(result.exception, ReachedFit):  # else: still a valid recipe
        assert result.exit_code == 2, f"{recipe}\n{result.exception!r}"
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
        assert "Traceback" not in result.stderr
    assert not out.exists(), f"{recipe}: left {list(out.iterdir())}"


@pytest.fixture
def no_fit(monkeypatch):
    def fit(self, *args, **kwargs):
        raise ReachedFit

    monkeypatch.setattr(keras.Model, "fit", fit)


SHORT = settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)


@SHORT
@given(mutations=st.lists(MUTATION, min_size=1, max_size=3))
def test_mutated_recipes_fail_cleanly(tmp_path_factory, no_fit, mutations):
    check(tmp_path_factory.mktemp("fuzz"), mutations)


@pytest.mark.slow
@settings(SHORT, max_examples=300, derandomize=False)
@given(mutations=st.lists(MUTATION, min_size=1, max_size=4))
def test_mutated_recipes_fail_cleanly_long(tmp_path_factory, no_fit, mutations):
    check(tmp_path_factory.mktemp("fuzz"), mutations)
