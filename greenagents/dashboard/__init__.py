"""``greenagents dashboard``: a web page over the execution log, live while a run writes it.

Needs the ``dashboard`` extra (``pip install 'greenagents[dashboard]'``, for Jinja2). It opens
the log read-only, binds 127.0.0.1 unless given a token, and serves on gevent's WSGI server::

    greenagents dashboard --db .greenagents/runs.db            # then open http://127.0.0.1:8765/

Pages: the runs (state, calls, ok/failed, tokens, cost, duration), one run (throughput, calls in
flight, latency percentiles and histogram, tokens and cost by model over time, errors by type
with samples, retries and cooldowns), the calls filtered and paginated, one call in full, CSV or
JSON export of any filtered table, and the failed inputs of a run written back as JSON Lines for
``greenagents run``.
"""

from __future__ import annotations

from .app import TOKEN_ENV, Dashboard, serve

__all__ = ["TOKEN_ENV", "Dashboard", "serve"]
