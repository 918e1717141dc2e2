"""Recipes: find one, read it with a source map, merge its ``extends`` chain, check it, load it.

The modules, bottom up: ``sourcemap`` (where each key of a resolved recipe was written),
``model`` (the frozen, typed :class:`~nspawnbuild.recipe.model.Recipe`), then the steps of
loading and ``load`` on top, which needs the plugin registry. Nothing is re-exported here, so
that importing the model never imports the loader (and the plugins with it).
"""
