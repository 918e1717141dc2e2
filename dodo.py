"""doit entry point: ``doit build recipe=NAME`` from the project root.

Thin on purpose: the tasks live in nspawnbuild.tasks, shared with ``nspawnbuild build``.
"""

from nspawnbuild.tasks import doit_config, task_build  # noqa: F401  (doit collects task_*)

DOIT_CONFIG = doit_config()
