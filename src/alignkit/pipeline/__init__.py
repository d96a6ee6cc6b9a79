"""`alignkit run`: recipes that chain evaluation, red teaming, feedback data, training and reporting."""

from alignkit.pipeline.recipe import Gate, Recipe, Stage, load_recipe, parse_recipe

__all__ = ["Gate", "Recipe", "Stage", "load_recipe", "parse_recipe"]
