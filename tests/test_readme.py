"""The README's model and recipe tables are the registry's and the recipe folder's.

Regenerate them with `python -m tests.test_readme` and paste the output into README.md.
"""

from pathlib import Path

import zoo
from tests.test_registry import GOLDEN
from zoo import registry

README = Path(__file__).resolve().parent.parent / "README.md"


def tables() -> str:
    lines = [
        "| model | family | default input | parameters | summary |",
        "| --- | --- | --- | ---: | --- |",
    ]
    for spec in registry.specs():
        shape = "x".join(str(d) for d in spec.input_shape)
        lines.append(
            f"| `{spec.name}` | {spec.family} | {shape} | {GOLDEN[spec.name]:,} | {spec.summary} |"
        )
    lines += ["", "| recipe | model | data | description |", "| --- | --- | --- | --- |"]
    for name in zoo.list_recipes():
        r = zoo.load_recipe(name)
        data = f"tfds `{r.data.name}`" if r.data.source == "tfds" else r.data.source
        text = " ".join(r.description.split())
        model = f"`{r.model.label}`"
        if r.model.backbone:
            model += f" backbone, weights: {r.model.backbone_weights}"
        lines.append(f"| `{name}` | {model} | {data} | {text} |")
    return "\n".join(lines) + "\n"


def test_readme_tables_match_the_registry_and_recipes():
    assert tables() in README.read_text(), (
        "README tables are stale: run `python -m tests.test_readme` and paste its output"
    )


if __name__ == "__main__":
    print(tables(), end="")
