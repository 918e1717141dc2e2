"""Recipes: find one, read it with a source map, merge its ``extends`` chain, check it, load it.

The modules, bottom up, each named for what it holds:

- ``sourcemap``: where each key of a resolved recipe was written (file and line), and the
  problems and confined file reads plugins make with it;
- ``model``: the frozen, typed :class:`~nspawnbuild.recipe.model.Recipe` and its entries;
- ``defaults``: the values a recipe gets for what it leaves out (epoch, levels, ...);
- ``find``: the search path, and a recipe name or path resolved to a file;
- ``merge``: ``extends`` applied (child wins, tables merge, append lists append);
- ``messages``: JSON Schema errors worded for recipe authors;
- ``read``: bounded reading of one file and of an ``extends`` chain;
- ``problems``: every problem of a recipe collected (bounded) before one error is raised;
- ``entries``: ``[[files]]`` and ``[[sources]]`` checked and typed;
- ``templates``: ``template = true`` files rendered in a bounded child process;
- ``load``: :func:`~nspawnbuild.recipe.load.load_recipe` and the editor schema, the only
  modules here that use the plugin registry.

Nothing is re-exported here, so that importing the model never imports the loader (and the
plugins with it).
"""
