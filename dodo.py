"""doit entry point: ``doit build recipe=NAME`` from the project root.

Thin on purpose: the tasks live in nspawnbuild.tasks, shared with ``nspawnbuild build``; the
options come from doit's command line (``keep_rootfs=1``) and the user variables
NSPAWNBUILD_OUT, NSPAWNBUILD_WORK and NSPAWNBUILD_CACHE.
"""

from nspawnbuild.tasks import dodo_options, dodo_task_build, doit_config

OPTIONS = dodo_options()
DOIT_CONFIG = doit_config(OPTIONS)
task_build = dodo_task_build(OPTIONS)  # doit collects task_*
