"""Recipes: TOML files validated into frozen `Recipe` objects. The shipped ones live beside this
file, so `zoo-train NAME` works after `pip install`."""

from zoo.recipes.loader import dumps, list_recipes, load_recipe
from zoo.recipes.schema import Recipe

__all__ = ["Recipe", "dumps", "list_recipes", "load_recipe"]
