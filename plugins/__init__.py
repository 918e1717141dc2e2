"""nspawnbuild's built-in plugins, registered through the ``nspawnbuild`` entry-point group."""
