"""Call asyncio code (``httpx.AsyncClient``, ``AsyncOpenAI``, pydantic-ai) from greenlets.

asyncio keeps one running event loop per OS thread, and every greenlet of a thread shares it: a
second greenlet calling ``asyncio.run`` (or a library's ``run_sync``) while another one's loop runs
fails with ``RuntimeError: asyncio.run() cannot be called from a running event loop`` or
``RuntimeError: This event loop is already running``. :func:`run_async` runs coroutines instead on
*one* event loop living in a real OS thread of its own (started on first use), and the calling
greenlet waits cooperatively: 200 greenlets awaiting at once finish in about one latency, and the
other greenlets run meanwhile.

* **Both ways cancellable.** A greenlet killed or timed out while it waits (``ga.each(...,
  timeout=)``, ``gevent.Timeout``, ``Greenlet.kill``) cancels its asyncio task; an exception or
  ``asyncio.CancelledError`` in the task is raised in the greenlet.
* **Unpatched too.** Without monkey-patching the caller is a thread: it simply blocks on the
  answer, and the loop thread is an ordinary one.
* **Your contextvars** (tracing, tenant ids) reach the coroutine, as they reach ``ga.each`` calls.
* **One loop for everything.** Async clients bind their connection pools to the loop that first
  used them, so build them inside coroutines (or share one: it always meets the same loop).

>>> import asyncio
>>> import greenagents as ga
>>> async def double(n: int) -> int:
...     await asyncio.sleep(0.01)
...     return 2 * n
>>> ga.run_async(double, 21)
42
>>> [r.value for r in ga.each([1, 2, 3], ga.async_to_sync(double))]
[2, 4, 6]
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextvars
import functools
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

import gevent
import gevent.event
import gevent.monkey

from .patching import available

if TYPE_CHECKING:
    import asyncio

__all__ = ["async_to_sync", "explain_running_loop", "run_async"]

T = TypeVar("T")
P = ParamSpec("P")

#: What asyncio says when a greenlet starts a loop while another greenlet's loop runs.
RUNNING_LOOP_MESSAGES = ("cannot be called from a running event loop", "event loop is already running")
HINT = ("greenagents: greenlets of one thread share asyncio's running loop; run coroutines with "
        "ga.run_async(coro) or wrap async functions with ga.async_to_sync(fn) instead.")


# The unpatched primitives, so the loop's thread is a real one and its handshakes real locks.
_real_lock = gevent.monkey.get_original("_thread", "allocate_lock")
_real_ident = gevent.monkey.get_original("_thread", "get_ident")


class _LoopThread:
    """The one event loop, in a real thread; restarted in a forked child (threads do not fork)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread_id: int | None = None
        self.pid = 0
        self.lock = _real_lock()

    def get(self) -> asyncio.AbstractEventLoop:
        with self.lock:
            if self.loop is None or self.pid != os.getpid():
                self.loop = self._start()
                self.pid = os.getpid()
            return self.loop

    def _start(self) -> asyncio.AbstractEventLoop:
        import asyncio  # here, not at import: asyncio imports ssl, which must wait for the patch

        started = _real_lock()
        started.acquire()
        box: list[asyncio.AbstractEventLoop] = []

        def run() -> None:
            self.thread_id = _real_ident()
            try:  # made here, not by the caller: under gevent its selector is this thread's hub's
                loop = asyncio.new_event_loop()
                asyncio.set_event_loop(loop)
                if available():
                    loop.set_default_executor(_GreenletExecutor())
                box.append(loop)
            finally:
                started.release()
            loop.run_forever()

        # A native thread even when threading is patched (a greenlet would share the caller's
        # running loop, the very problem). Under gevent it waits on its own hub, which is what
        # lets asyncio's default executor (DNS lookups) run there too.
        gevent.monkey.get_original("_thread", "start_new_thread")(run, ())
        started.acquire()  # milliseconds, once: a real wait is fine (and works in any thread)
        if not box:
            raise RuntimeError("greenagents could not start its asyncio event loop thread")
        return box[0]

    def stop(self) -> None:
        loop, self.loop = self.loop, None
        if loop is not None and self.pid == os.getpid() and loop.is_running():
            loop.call_soon_threadsafe(loop.stop)


class _GreenletExecutor(concurrent.futures.ThreadPoolExecutor):  # asyncio insists on the type
    """asyncio's default executor in the loop's thread once patched: a greenlet per job.

    Patched threads are greenlets anyway; these run on the loop thread's own hub while asyncio
    waits (``loop.getaddrinfo`` is the usual job), and there is no thread for the interpreter to
    join at exit from another thread's hub, which would hang.
    """

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:
                    future.set_exception(exc)

        gevent.spawn(run)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass  # no thread to stop: a job still running ends with the loop's thread


_LOOP = _LoopThread()
atexit.register(_LOOP.stop)


def _deliver(deliver: Callable[[tuple[bool, Any]], None], task: asyncio.Future[Any]) -> None:
    """Hand a finished task's outcome to the waiting caller (in the loop's thread)."""
    if task.cancelled():
        import asyncio

        outcome: tuple[bool, Any] = (False, asyncio.CancelledError("the asyncio task was cancelled"))
    elif task.exception() is not None:
        outcome = (False, task.exception())
    else:
        outcome = (True, task.result())
    deliver(outcome)


def _awaitable(target: Awaitable[T] | Callable[..., Awaitable[T]], args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> Callable[[], Awaitable[T]]:
    if callable(target) and not hasattr(target, "__await__"):
        return functools.partial(target, *args, **kwargs)
    if args or kwargs:
        getattr(target, "close", lambda: None)()  # an unawaited coroutine would warn when collected
        raise TypeError("run_async(awaitable) takes no arguments; pass them to the async "
                        "function instead: run_async(fn, *args, **kwargs)")
    return lambda: target


async def _as_coroutine(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


@overload
def run_async(target: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs) -> T: ...
@overload
def run_async(target: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T: ...
@overload
def run_async(target: Awaitable[T]) -> T: ...
def run_async(target: Any, *args: Any, **kwargs: Any) -> Any:
    """Run ``target`` on the shared asyncio loop and return its result, waiting cooperatively.

    ``target`` is an awaitable (``run_async(client.get(url))``) or an async function with its
    arguments (``run_async(agent.run, "hi")``), which is then called in the loop's thread. A kill
    or a ``gevent.Timeout`` of the waiting greenlet cancels the task and propagates; the task's
    own exception (``asyncio.CancelledError`` included) is raised here. Calling it from the loop's
    own thread (from async code) raises ``RuntimeError``: ``await`` there instead.

    >>> import asyncio, greenagents as ga
    >>> ga.run_async(asyncio.sleep(0, result="done"))
    'done'
    """
    make = _awaitable(target, args, kwargs)
    loop = _LOOP.get()
    if _real_ident() == _LOOP.thread_id:
        getattr(target, "close", lambda: None)()  # an unawaited coroutine would warn when collected
        raise RuntimeError("run_async was called from async code on its own event loop; "
                           "`await` the coroutine there instead")
    if available():  # a greenlet (or the main one) parks; its hub runs the others meanwhile
        return _wait_green(loop, make)
    return _wait_thread(loop, make)


def _schedule(loop: asyncio.AbstractEventLoop, make: Callable[[], Awaitable[Any]],
              deliver: Callable[[tuple[bool, Any]], None]) -> Callable[[], object]:
    """Start the task in the loop's thread; return a thread-safe canceller."""
    box: list[asyncio.Future[Any]] = []
    cancelled = False
    context = contextvars.copy_context()  # the caller's: a task copies the context it starts in

    def start() -> None:
        if cancelled:
            return
        task = context.run(loop.create_task, _as_coroutine(make))
        task.add_done_callback(functools.partial(_deliver, deliver))
        box.append(task)

    def cancel_in_loop() -> None:
        nonlocal cancelled
        cancelled = True
        for task in box:
            task.cancel()

    loop.call_soon_threadsafe(start)
    return functools.partial(loop.call_soon_threadsafe, cancel_in_loop)


def _wait_green(loop: asyncio.AbstractEventLoop, make: Callable[[], Awaitable[Any]]) -> Any:
    # An async watcher is libev's thread-safe doorbell; while started it also keeps this hub from
    # deciding that nothing can ever wake it (LoopExit) when all its greenlets wait on the loop.
    doorbell = gevent.get_hub().loop.async_()
    answer: gevent.event.AsyncResult[tuple[bool, Any]] = gevent.event.AsyncResult()
    box: list[tuple[bool, Any]] = []

    def deliver(outcome: tuple[bool, Any]) -> None:  # in the loop's thread
        box.append(outcome)
        doorbell.send()

    doorbell.start(lambda: answer.set(box[0]))
    try:
        cancel = _schedule(loop, make, deliver)
        try:
            ok, value = answer.get()  # type: ignore[misc]  # AsyncResult's stubs lose the type
        except BaseException:  # killed or timed out while waiting: the task must not run on
            cancel()
            raise
    finally:
        doorbell.close()
    if ok:
        return value
    raise value


def _wait_thread(loop: asyncio.AbstractEventLoop, make: Callable[[], Awaitable[Any]]) -> Any:
    finished = threading.Event()
    box: list[tuple[bool, Any]] = []

    def deliver(outcome: tuple[bool, Any]) -> None:
        box.append(outcome)
        finished.set()

    cancel = _schedule(loop, make, deliver)
    try:
        finished.wait()
    except BaseException:  # Ctrl-C in the main thread
        cancel()
        raise
    ok, value = box[0]
    if ok:
        return value
    raise value


def async_to_sync(fn: Callable[P, Awaitable[T]]) -> Callable[P, T]:
    """A blocking version of the async function ``fn``, run by :func:`run_async`; a decorator too.

    >>> import asyncio, greenagents as ga
    >>> @ga.async_to_sync
    ... async def hello(name: str) -> str:
    ...     await asyncio.sleep(0)
    ...     return f"hello {name}"
    >>> hello("world")
    'hello world'
    """

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        return run_async(fn, *args, **kwargs)

    return call


def explain_running_loop(exc: BaseException) -> BaseException:
    """Append :data:`HINT` to asyncio's running-loop ``RuntimeError`` (once); other errors as is.

    >>> error = explain_running_loop(RuntimeError("This event loop is already running"))
    >>> str(error).splitlines()[1].startswith("greenagents: greenlets of one thread share")
    True
    """
    if (isinstance(exc, RuntimeError) and len(exc.args) == 1 and isinstance(exc.args[0], str)
            and any(message in exc.args[0] for message in RUNNING_LOOP_MESSAGES)
            and HINT not in exc.args[0]):
        exc.args = (f"{exc.args[0]}\n{HINT}",)
    return exc
