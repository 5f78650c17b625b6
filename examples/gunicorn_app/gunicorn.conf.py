"""gunicorn settings for greenagents apps: gevent workers, patched before anything else.

``gunicorn -c gunicorn.conf.py`` (from this folder, or give the path from anywhere).
"""

import greenagents.monkey  # noqa: F401, I001  # FIRST line: see "Why patch here" in README.md

import os
from pathlib import Path

wsgi_app = "app:app"
chdir = str(Path(__file__).resolve().parent)  # so "app:app" is found from any working directory
bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))  # ~ one per core: a worker uses one core

# Each request runs in a greenlet of its worker; worker_connections caps those per worker.
# It does NOT count the greenlets a request starts with ga.batch/each/stream: their bound is
# max_concurrent= (default GREENAGENTS_MAX_CONCURRENCY, 20) per batch, so one worker may have up
# to worker_connections x that many model calls in flight. Use ga.rate_limit() for a provider's
# budget across all of them.
worker_class = "gevent"
worker_connections = 1000

# A heartbeat, not a request timeout: the master kills a worker that has not checked in for
# `timeout` seconds. A greenlet waiting on the network never delays the heartbeat; CPU work that
# holds the hub longer (a huge JSON parse, a tokenizer over a book) gets the worker killed with
# every request it was serving. Keep such work short or move it to a process pool.
timeout = 60
# On SIGTERM, requests in flight (model calls of tens of seconds) get this long to finish.
graceful_timeout = 60
# Seconds an idle client connection stays open for its next request. Behind a load balancer,
# set it above the balancer's idle timeout (60 s on AWS ALB), or the balancer gets resets.
keepalive = 5
