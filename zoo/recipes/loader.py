"""Finding, reading, extending, overriding and validating recipe files."""

from __future__ import annotations

import copy
import tomllib
import types
import typing
from importlib import resources
from pathlib import Path

import pydantic
import tomli_w

from zoo.errors import ZooError, suggest
from zoo.recipes.schema import SOURCE_KEYS, Recipe


def builtin_dir() -> Path:
    return Path(str(resources.files("zoo.recipes")))


def list_recipes() -> list[str]:
    """Names of the recipes shipped with zoo."""
    return sorted(p.stem for p in builtin_dir().glob("*.toml"))


def _is_path(ref: str) -> bool:
    return ref.endswith(".toml") or "/" in ref or "\\" in ref


def _locate(ref: str, base: Path | None) -> Path:
    if _is_path(ref):
        path = Path(ref).expanduser()
        if not path.is_absolute() and base is not None and not path.exists():
            path = base / path
        if not path.is_file():
            raise ZooError(f"recipe file {ref!r} does not exist")
        return path
    path = builtin_dir() / f"{ref}.toml"
    if not path.is_file():
        raise suggest(ref, list_recipes(), what="recipe", hint="`zoo list recipes` shows them")
    return path


def _read(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ZooError(f"recipe {path}: not valid TOML: {e}") from e


# Tables whose `name` is a choice among kinds, with arguments of that kind: a child naming
# another kind replaces the whole table. Elsewhere (`[data]`: name is a TFDS dataset) a
# `name` is one key like the others.
CHOICE_TABLES = ("model", "optimizer", "schedule")


def _drop_foreign(data: dict, source, keep=()) -> None:
    """Removes the keys of `data` that say where another kind of source's dataset is (a
    child recipe or --set naming another data.source does not inherit them), but `keep`."""
    for key, sources in SOURCE_KEYS.items():
        if key not in keep and source not in sources:
            data.pop(key, None)


def _merge(base: dict, over: dict) -> dict:
    """Tables merge key by key; any other value (arrays included) replaces the base's, and so
    does a choice table naming another `name` (another model, optimizer or schedule). [data]
    always merges, less where the dataset is (SOURCE_KEYS) when data.source changes."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        old = out.get(key)
        if key == "data" and isinstance(value, dict) and isinstance(old, dict):
            source = value.get("source", old.get("source"))
            if source != old.get("source"):
                _drop_foreign(old, source)
        if (
            isinstance(value, dict)
            and isinstance(old, dict)
            and (key not in CHOICE_TABLES or value.get("name", old.get("name")) == old.get("name"))
        ):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _resolve(ref: str, base: Path | None, seen: tuple[str, ...] = ()) -> dict:
    path = _locate(ref, base)
    key = str(path.resolve())
    if key in seen:
        raise ZooError(f"recipe {path.stem}: `extends` forms a cycle through {path}")
    raw = _read(path)
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ZooError(
            f"recipe {path.stem}: extends must be a recipe name or path, received {parent!r}"
        )
    return _merge(_resolve(parent, path.parent, (*seen, key)), raw)


def parse_override(item: str) -> tuple[list[str], object]:
    """`a.b=value` -> (["a", "b"], value); value is read as TOML, else taken as a string."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ZooError(
            f"--set expects key=value with a dotted key such as data.batch_size=64, "
            f"received {item!r}"
        )
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    return key.split("."), value


def apply_overrides(raw: dict, overrides) -> dict:
    out = copy.deepcopy(raw)
    given = set()
    for item in overrides:
        keys, value = parse_override(item)
        given.add(tuple(keys))
        data = out.get("data")
        if keys == ["data", "source"] and isinstance(data, dict) and data.get("source") != value:
            _drop_foreign(data, value, keep=[g[1] for g in given if len(g) > 1 and g[0] == "data"])
        node = out
        for k in keys[:-1]:
            child = node.setdefault(k, {})
            if not isinstance(child, dict):
                raise ZooError(f"--set {item}: {k} is not a table, so it has no key {keys[-1]!r}")
            node = child
        node[keys[-1]] = value
    return out


def _schema_path(loc: tuple) -> tuple[list[str], type | None]:
    """Walks the schema along a pydantic error location: the location without the tags of
    tagged unions (compile.schedule.<tag>.alpha), and the model class it ends in."""
    shown, model, _ = _walk(loc)
    return shown, model


def _walk(loc: tuple) -> tuple[list[str], type | None, int | None]:
    """_schema_path's walk, and where the location names the branch of a union of plain types
    (pydantic adds the branch's name: data.eval_identities.constrained-int), that part's index."""
    model, shown, parts = Recipe, [], list(loc)
    while parts:
        part = str(parts.pop(0))
        shown.append(part)
        field = model.model_fields.get(part) if model is not None else None
        if field is None:
            shown.extend(str(p) for p in parts)
            return shown, None, None
        args = getattr(field.annotation, "__args__", (field.annotation,))
        choices = [a for a in args if isinstance(a, type) and issubclass(a, pydantic.BaseModel)]
        members = [a for a in args if a is not type(None)]
        if not choices and len(members) > 1 and _is_union(field.annotation) and parts:
            shown.extend(str(p) for p in parts)
            return shown, None, len(loc) - len(parts)
        if len(choices) > 1 and parts:
            tag = str(parts.pop(0))
            choices = [
                c
                for c in choices
                if tag in getattr(c.model_fields["name"].annotation, "__args__", ())
            ]
        model = choices[0] if choices else None
    return shown, model, None


def _is_union(annotation) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


# pydantic error types that say a value is not of a union branch's type at all (rather than of
# its type and out of its bounds)
_NOT_THIS_TYPE = ("_type", "_parsing", "literal_error", "int_from_float")


def _messages(errors: list[dict]) -> list[str]:
    """One line per pydantic error, except that a value no branch of a union field accepts
    (a list of names, or a count) is reported once per branch by pydantic: those collapse to
    the errors of the one branch whose type the value has (`[]`: the list is too short), or
    else to one line of what the branches take ("should be a valid list or a valid integer")."""
    groups: dict[tuple, dict] = {}
    order: list = []
    for err in errors:
        branch = _walk(err["loc"])[2]
        if branch is None:
            order.append(err)
            continue
        field = err["loc"][:branch]
        if field not in groups:
            groups[field] = {}
            order.append(field)
        narrowed = {**err, "loc": field + err["loc"][branch + 1 :]}
        groups[field].setdefault(err["loc"][branch], []).append(narrowed)
    lines = []
    for item in order:
        if isinstance(item, dict):
            lines.append(_describe(item))
            continue
        branches = list(groups[item].values())
        fitting = [
            errs
            for errs in branches
            if not all(
                len(e["loc"]) == len(item) and e["type"].endswith(_NOT_THIS_TYPE) for e in errs
            )
        ]
        if len(fitting) == 1:
            lines.extend(_describe(e) for e in fitting[0])
            continue
        wanted = []
        for errs in branches:
            for e in errs:
                msg = e["msg"].removeprefix("Input should be ")
                if msg not in wanted:
                    wanted.append(msg)
        first = branches[0][0]
        lines.append(
            f"{'.'.join(_schema_path(item)[0])}: input should be {' or '.join(wanted)}, "
            f"received {first['input']!r}"
        )
    return lines


def _describe(error: dict) -> str:
    path, model = _schema_path(
        error["loc"][:-1] if error["type"] == "extra_forbidden" else error["loc"]
    )
    kind = error["type"]
    if kind == "extra_forbidden":
        name = str(error["loc"][-1])
        key = ".".join([*path, name if name.isprintable() and name.strip() else repr(name)])
        allowed = (
            [f for f in model.model_fields if not (model is Recipe and f == "name")]
            if model is not None
            else []
        )
        return f"{key} is not a recipe key" + (
            f" (allowed: {', '.join(allowed)})" if allowed else ""
        )
    loc = ".".join(path)
    if kind == "missing":
        return f"{loc} is required"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    text = f"{loc}: {message[0].lower()}{message[1:]}" if loc else message
    if "input" in error and kind != "value_error":
        text += f", received {error['input']!r}"
    return text


def validate(raw: dict, name: str) -> Recipe:
    try:
        return Recipe.model_validate({**raw, "name": name})
    except pydantic.ValidationError as e:
        lines = _messages(e.errors())
        raise ZooError(f"recipe {name}: " + "; ".join(lines)) from e


def load_recipe(ref: str | Path, overrides=()) -> Recipe:
    """Loads a recipe by name (a file shipped in zoo/recipes) or by path, with `extends` and
    dotted `key=value` overrides applied, and validates it. Its name is the file's stem unless
    the file sets `name`.

    Example:

    ```python
    recipe = zoo.load_recipe("lenet_digits", overrides=["fit.epochs=2"])
    ```
    """
    ref = str(ref)
    if isinstance(overrides, str):  # one "key=value"
        overrides = [overrides]
    path = _locate(ref, None)
    raw = apply_overrides(_resolve(ref, None), overrides)
    name = raw.pop("name", path.stem)
    if not isinstance(name, str) or not name:
        raise ZooError(f"recipe {path.stem}: name must be a non-empty string, received {name!r}")
    return validate(raw, name)


def dumps(recipe: Recipe) -> str:
    """The resolved recipe as TOML (no `extends`: every value is written out, `name` too, so the
    copy in a run directory loads under the recipe's own name)."""
    return tomli_w.dumps(recipe.to_dict())
