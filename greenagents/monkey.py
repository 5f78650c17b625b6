"""``import greenagents.monkey`` as the first line of a program patches the standard library.

It is :func:`greenagents.patch` as an import, for the place where a call is awkward (the top of
``gunicorn.conf.py``, a Celery app module, a ``sitecustomize``). Everything else about patching
lives in :mod:`greenagents.patching`, which this module only triggers.

>>> import greenagents.monkey  # doctest: +SKIP
"""

from .patching import patch

patch()
