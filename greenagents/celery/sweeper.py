"""Giving a dead worker's messages to the living: a sweep in every worker, however busy it is.

Redis keeps a message a worker took but never acknowledged (its worker was SIGKILLed) in an
``unacked`` hash, and kombu puts it back in the queue once it is ``visibility_timeout`` old. But
kombu's own sweep only runs inside a worker's read of the queue, when that read finds *no event*
at all; an idle worker waiting on ``BRPOP`` always gets one (the empty answer at the end of each
``BRPOP`` timeout), so a worker that has drained the queue never sweeps. Chunked batches end that
way: after a kill, every message was already taken, the survivors finish theirs and idle, and the
dead worker's messages stayed unacknowledged until the batch's deadline (seen: 35 messages, 30 s
after a 3 s visibility timeout). Each worker therefore runs its own sweep every
``unacked_restore_interval`` seconds, on a connection of its own, from the moment it is ready.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import celery
from celery import signals

__all__ = ["install"]

log = logging.getLogger("greenagents.celery")


def install(app: celery.Celery) -> None:
    """Start the sweep in each worker of ``app`` once it is ready (Redis brokers only); once."""

    def on_ready(sender: Any = None, **_: Any) -> None:
        if sender is not None and getattr(sender, "app", app) is not app:
            return
        with app.connection_for_write() as connection:
            if connection.transport.driver_type != "redis":
                return
        interval = float(app.conf.broker_transport_options.get("unacked_restore_interval", 10))
        # A thread: a greenlet in a patched worker (-P gevent), a real thread in a prefork one.
        threading.Thread(target=_sweep, args=(app, interval), daemon=True,
                         name="greenagents-sweeper").start()

    signals.worker_ready.connect(on_ready, weak=False, dispatch_uid=f"greenagents-sweep-{id(app)}")


def _sweep(app: celery.Celery, interval: float) -> None:
    while True:
        time.sleep(interval)
        try:
            with app.connection_for_write() as connection:
                # num=None: every message past its visibility timeout; interval=1: scan each time.
                connection.default_channel.qos.restore_visible(num=None, interval=1)
        except Exception as exc:  # the broker away for a moment: try again next interval
            log.warning("could not look for lost messages in the broker: %s", exc)
