"""Is this process (and its environment) safe for thousands of green calls? ``ga.doctor()`` says.

Each :class:`Finding` is one fact with what follows from it: patched or not and what was imported
too early, installed versions with known gevent problems, gevent's thread pool and resolver, the
open-file limit against the concurrency you want. ``greenagents doctor`` prints the same, and with
``--watch SCRIPT`` runs a script under gevent's monitor thread, reporting every time something
held the hub (blocked every greenlet) longer than a threshold, with the blocking stack.

>>> import greenagents as ga
>>> report = ga.doctor(concurrency=100)
>>> sorted(finding.name for finding in report.findings)[:3]
['grpc', 'httpcore', 'imported-before-patch']
"""

from __future__ import annotations

import importlib.metadata
import os
import resource
import subprocess
import sys
from dataclasses import dataclass, field

import gevent

from .patching import fragile_imported, imported_before_patch, is_patched

__all__ = ["Diagnosis", "Finding", "doctor", "watch"]

#: Descriptors a process needs beside one per connection (files, pipes, the hub's own).
_SPARE_FILES = 64


@dataclass(frozen=True)
class Finding:
    """One fact about the process: ``ok`` False when it will hurt, with ``fix`` saying what to do."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def __str__(self) -> str:
        line = f"[{'ok' if self.ok else '!!'}] {self.name}: {self.detail}"
        return f"{line}\n     fix: {self.fix}" if self.fix and not self.ok else line


@dataclass(frozen=True)
class Diagnosis:
    """What :func:`doctor` found; ``ok`` when no finding is a problem."""

    patched: bool
    imported_before_patch: dict[str, str]
    versions: dict[str, str]
    threadpool_size: int
    resolver: str
    open_files: int
    concurrency: int
    findings: tuple[Finding, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return all(finding.ok for finding in self.findings)

    @property
    def problems(self) -> tuple[Finding, ...]:
        return tuple(finding for finding in self.findings if not finding.ok)

    def __str__(self) -> str:
        verdict = "no problem found" if self.ok else f"{len(self.problems)} problem(s)"
        return "\n".join([*map(str, self.findings), f"greenagents doctor: {verdict}"])


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _major_minor(version: str) -> tuple[int, int]:
    parts = [int("".join(ch for ch in part if ch.isdigit()) or 0) for part in version.split(".")[:2]]
    major, minor = [*parts, 0, 0][:2]
    return major, minor


def _patching(patched: bool, early: dict[str, str]) -> list[Finding]:
    if not patched:
        found = [Finding("patched", False, "the standard library is not monkey-patched: batches run "
                         "in real threads, one per concurrent call",
                         "make `import greenagents.monkey` the first import of the program")]
        if early:
            found.append(Finding("imported-before-patch", False,
                                 f"already imported, so patching now would be too late: "
                                 f"{', '.join(early)}", "import them after greenagents.monkey"))
        else:
            found.append(Finding("imported-before-patch", True, "nothing fragile imported yet"))
        return found
    early_detail = "; ".join(f"{name} ({why})" for name, why in early.items())
    return [Finding("patched", True, "socket, ssl, time and threading are patched by gevent"),
            Finding("imported-before-patch", not early,
                    f"imported before the patch: {early_detail}" if early else "nothing fragile",
                    "make `import greenagents.monkey` the first import of the program")]


def _versions(versions: dict[str, str]) -> list[Finding]:
    found = []
    core = versions.get("pydantic-core")
    if core is not None:
        old = _major_minor(core) < (2, 18)
        found.append(Finding("pydantic-core", not old, f"pydantic-core {core}"
                             + (" crashes (segfaults) under gevent" if old else ""),
                             'pip install "pydantic-core>=2.18" (with a pydantic that allows it)'))
    httpcore = versions.get("httpcore")
    if httpcore is not None and httpcore.startswith("1."):
        found.append(Finding(
            "httpcore", False,
            f"httpcore {httpcore} (under httpx) leaks pool connections when a call is stopped "
            "while it waits for one (ga timeout=, deadline=, a kill): a shared httpx.Client can "
            "end with every slot stuck connecting and only PoolTimeouts after",
            "give httpx its own timeout (httpx.Client(timeout=...)) rather than ga's timeout=, "
            "or use httpx2 (what the openai and anthropic SDKs use), or a client per batch"))
    else:
        found.append(Finding("httpcore", True, f"httpcore {httpcore}" if httpcore else
                             "httpcore 1.x not installed"))
    found.append(_grpc(versions.get("grpcio")))
    return found


def _grpc(version: str | None) -> Finding:
    if version is None:
        return Finding("grpc", True, "grpcio not installed")
    cygrpc = sys.modules.get("grpc._cython.cygrpc")
    if cygrpc is None:
        return Finding("grpc", True, f"grpcio {version} installed, not imported yet (call "
                       "grpc.experimental.gevent.init_gevent() after patching, before a channel)")
    initialized = getattr(cygrpc, "gevent_g", None) is not None
    return Finding("grpc", initialized, f"grpcio {version} imported, gevent support "
                   + ("initialized" if initialized else "NOT initialized: its threads block the hub"),
                   "import grpc.experimental.gevent; grpc.experimental.gevent.init_gevent() right "
                   "after patching, before any channel")


def _hub(concurrency: int) -> tuple[int, str, list[Finding]]:
    hub = gevent.get_hub()
    size = hub.threadpool.maxsize
    resolver = type(hub.resolver).__module__.rpartition(".")[2]  # thread, ares, dnspython, block
    found = [Finding("threadpool", True, f"gevent's thread pool holds {size} threads (DNS lookups "
                     "and file I/O queue there; gevent.get_hub().threadpool.maxsize = N raises it)"),
             Finding("resolver", resolver != "blocking", f"gevent resolver: {resolver}"
                     + (" (bursts of new connections queue behind the thread pool; "
                        "GEVENT_RESOLVER=ares avoids it)" if resolver == "thread" and concurrency
                        > 10 * size else ""), "unset GEVENT_RESOLVER=block")]
    return size, resolver, found


def _open_files(concurrency: int) -> tuple[int, Finding]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = concurrency + _SPARE_FILES
    limit = "unlimited" if soft == resource.RLIM_INFINITY else str(soft)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raise_to = "the hard limit" if hard == resource.RLIM_INFINITY or hard >= wanted else \
            f"{wanted} (the hard limit {hard} is lower: raise it in limits.conf or the unit file)"
        return soft, Finding("open-files", False, f"ulimit -n is {limit}: too few for {concurrency} "
                             f"concurrent connections (each needs a descriptor; {wanted} wanted)",
                             f"`ulimit -n {wanted}` before starting, or resource.setrlimit(...) "
                             f"up to {raise_to}")
    return soft, Finding("open-files", True, f"ulimit -n is {limit}, enough for {concurrency} "
                         "concurrent connections")


def doctor(concurrency: int | None = None) -> Diagnosis:
    """Check this process for what breaks or slows thousands of green calls.

    ``concurrency`` is how many calls you want in flight (default: ``max_concurrency``).
    """
    if concurrency is None:
        from .config import settings

        concurrency = settings().max_concurrency
    patched = is_patched()
    early = imported_before_patch() if patched else fragile_imported()
    versions = {name: version for name in ("gevent", "greenlet", "pydantic-core", "httpcore",
                                           "httpx", "httpcore2", "grpcio")
                if (version := _version(name)) is not None}
    size, resolver, hub_findings = _hub(concurrency)
    files, files_finding = _open_files(concurrency)
    findings = (*_patching(patched, early), *_versions(versions), *hub_findings, files_finding)
    return Diagnosis(patched, early, versions, size, resolver, files, concurrency, findings)


#: Run in the watched script's interpreter: patch, report each EventLoopBlocked, run the script.
_WATCHER = """
import greenagents.monkey
import runpy, sys
import gevent.events

last = None

def report(event):
    global last
    if not isinstance(event, gevent.events.EventLoopBlocked):
        return
    text = "".join(line if line.endswith("\\n") else line + "\\n" for line in event.info)
    stack = text.partition("Blocked Stack")[2].partition("\\n")[2].partition("Info:")[0].rstrip()
    if stack == last:  # the monitor asks again while the same block lasts
        return
    last = stack
    print(f"greenagents doctor: {event.greenlet} held the hub for more than "
          f"{event.blocking_time}s (every other greenlet waited); blocking stack:\\n{stack}",
          file=sys.stderr, flush=True)

gevent.events.subscribers.append(report)
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""


def watch(script: str, args: list[str], threshold: float) -> int:
    """Run ``script`` patched, under gevent's monitor thread; return its exit status.

    Every time the hub is held longer than ``threshold`` seconds (CPU work or a call that blocks
    without yielding), the stack that held it goes to stderr.
    """
    env = dict(os.environ, GEVENT_MONITOR_THREAD_ENABLE="true",
               GEVENT_MAX_BLOCKING_TIME=str(threshold),
               GEVENT_MONITOR_PRINT_BLOCKING_REPORTS="false")  # ours instead: shorter, say why
    return subprocess.run([sys.executable, "-c", _WATCHER, script, *args], env=env,
                          check=False).returncode
