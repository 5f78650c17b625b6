"""Doctests of ``greenagents.celery`` need the celery extra; without it they are not collected."""

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("celery") else ["greenagents/celery/*"]
