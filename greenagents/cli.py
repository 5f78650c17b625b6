"""The ``greenagents`` command: ``demo``, ``run``, ``stats``, ``dashboard``, ``sim`` and ``doctor``.

:func:`main` patches the standard library before it imports anything that could import ``ssl``
(click and this module import neither), so agents and SDKs loaded by ``run`` work under gevent.
Usage problems — an unknown target, an unreadable file, a bad flag — exit with status 2 and one
line on stderr, never a traceback. ``run`` exits 0 when every row succeeded and 1 otherwise.

    greenagents demo --calls 300
    greenagents run agents.py:SentimentAgent --input in.jsonl --output out.jsonl --resume
    greenagents stats --since 1h --by model
    greenagents dashboard --db .greenagents/runs.db
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import io
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import click
import gevent.os

import greenagents as ga
from greenagents import jsonl, runs
from greenagents.result import target_name
from greenagents.stats_report import render, table
from greenagents.summaries import ErrorTally

__all__ = ["cli", "main"]

_INTERRUPTED = 130  # the shell's convention for a run stopped by SIGINT


class UsageProblem(click.ClickException):
    """A usage error reported as one line (``Error: ...``), exit status 2."""

    exit_code = 2


def main() -> None:
    """Entry point of the ``greenagents`` console script and ``python -m greenagents``."""
    ga.patch()  # first: nothing heavy (ssl, urllib3, SDKs, user code) is imported yet
    from greenagents.testing.cli import sim

    cli.add_command(sim)
    cli(prog_name="greenagents")


class _Commands(click.Group):
    """The command group; a :class:`~greenagents.errors.ConfigError` from any command (a bad
    ``GREENAGENTS_*`` value, an unusable log) is one line and exit 2, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ga.errors.ConfigError as exc:
            raise UsageProblem(str(exc)) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(ga.__version__, prog_name="greenagents")
def cli() -> None:
    """Run thousands of LLM agent calls at once from plain synchronous Python."""


# ---------------------------------------------------------------------------------------- demo


@cli.command()
@click.option("--calls", default=300, show_default=True, type=click.IntRange(1),
              help="How many agent calls to make.")
@click.option("--concurrency", default=100, show_default=True, type=click.IntRange(1),
              help="Calls running at once.")
@click.option("--model", default=None, metavar="PROVIDER/NAME",
              help="Ask this real provider (its API key in the environment) instead of the "
                   "built-in simulator.")
def demo(calls: int, concurrency: int, model: str | None) -> None:
    """Run sample agents concurrently and compare with one-by-one (no API key needed)."""
    from greenagents import demo as sample

    log = _demo_log()
    try:
        report = sample.run(calls=calls, concurrency=concurrency, model=model,
                            progress=sys.stderr.isatty())
    except ga.errors.ConfigError as exc:
        raise UsageProblem(str(exc)) from None
    ga.tracking.flush(timeout=30)
    click.echo(f"greenagents demo: sample agents against {report.where}\n")
    click.echo(table([list(pair) for pair in report.rows()]))
    click.echo(f"\nevery call is in {log}; look at them with:\n"
               f"  greenagents dashboard --db {shlex.quote(log)}")
    if report.errors:
        click.echo("\nfailed calls, by error:", err=True)
        click.echo("\n".join(f"  {count}" for count in report.errors), err=True)
        sys.exit(1)


def _demo_log() -> str:
    """Log the demo's calls (with their made-up inputs) where the tracking setting says, else
    in the temp directory: the demo writes nothing into the directory it is run from."""
    url = ga.settings().tracking
    if url is None:
        url = f"sqlite:///{Path(tempfile.gettempdir()) / 'greenagents-demo' / 'runs.db'}"
        ga.configure(tracking=url, tracking_payloads=True)
    try:
        return ga.tracking.database_path(url)
    except ga.errors.ConfigError as exc:
        raise UsageProblem(str(exc)) from None


# ----------------------------------------------------------------------------------------- run


def _importable(directory: str) -> None:
    if directory not in sys.path:
        sys.path.insert(0, directory)


def _import(module_ref: str) -> ModuleType:
    """Import ``module_ref``: a dotted module name, or a path to a ``.py`` file."""
    if module_ref.endswith(".py") or os.sep in module_ref:
        path = Path(module_ref)
        if not path.is_file():
            raise UsageProblem(f"no such file: {module_ref}")
        _importable(str(path.parent.resolve()))  # so the file can import its neighbours
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None  # a .py path always has a loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module  # pickling and qualified names need it registered
        spec.loader.exec_module(module)
        return module
    _importable(os.getcwd())  # as `python -m` would: modules beside you are importable
    return importlib.import_module(module_ref)


def load_target(spec: str) -> Callable[..., Any]:
    """The callable named by ``module:Name`` or ``path/to/file.py:Name`` (``Name`` may be dotted).

    Anything that goes wrong — no such file or module, an import failing, no such name, not a
    callable — is a one-line :class:`UsageProblem`, not a traceback.

    >>> load_target("os.path:join")("runs", "out.jsonl")
    'runs/out.jsonl'
    """
    module_ref, _, name = spec.rpartition(":")
    if not module_ref or not name:
        raise UsageProblem(f"target {spec!r}: expected module:Name or path/to/file.py:Name")
    try:
        target: Any = _import(module_ref)
    except UsageProblem:
        raise
    except BaseException as exc:  # the user's module failing to import is a usage problem
        message = str(exc).splitlines()[0] if str(exc) else ""
        raise UsageProblem(f"cannot import {module_ref}: {type(exc).__name__}: {message}") from None
    for part in name.split("."):
        if not hasattr(target, part):
            raise UsageProblem(f"{module_ref} has no {name!r}")
        target = getattr(target, part)
    if not callable(target):
        raise UsageProblem(f"{spec} is a {type(target).__name__}, not an Agent class or callable")
    return target  # type: ignore[no-any-return]


def _reject(problem: str) -> None:
    """Stands in for the target on a malformed input line: its row is this error."""
    raise ga.errors.InputError(problem)


class _AtLine:
    """The target, called for one input line, so the execution log records that line's index
    (an Agent records its own calls, from inside the run's greenlets)."""

    def __init__(self, target: Callable[..., Any], line: int):
        self.target, self.line = target, line
        self.__qualname__ = getattr(target, "__qualname__", type(target).__qualname__)
        self.__module__ = getattr(target, "__module__", __name__)
        if hasattr(target, "__greenagents_call__"):  # an Agent: keep its whole Result
            self.__greenagents_call__ = self._agent_call

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if hasattr(self.target, "__greenagents_call__"):
            return self._agent_call(args, kwargs)
        runs.input_index.set(self.line)  # this call's own context: nothing to reset
        return self.target(*args, **kwargs)

    def _agent_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        runs.input_index.set(self.line)
        return self.target.__greenagents_call__(args, kwargs)  # type: ignore[attr-defined]


class _Rows:
    """The calls for the input's lines not done yet, read lazily; where each call came from.

    ``origin`` maps a call's position in the stream to its input line and keyword arguments
    (``None`` for a malformed line) while the call runs, so memory stays O(concurrency).
    """

    def __init__(self, target: Callable[..., Any], lines: IO[bytes], done: set[int],
                 total: int | None, *, by_line: bool):
        self.target, self.lines, self.done, self.total = target, lines, done, total
        self.by_line = by_line  # wrap the target so its log rows carry the input line
        self.origin: dict[int, tuple[int, dict[str, Any] | None]] = {}

    def __iter__(self) -> Iterator[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]]:
        position = 0
        for index, obj in jsonl.read_objects(self.lines):
            if index in self.done:
                continue
            if isinstance(obj, dict):
                self.origin[position] = (index, obj)
                yield (_AtLine(self.target, index) if self.by_line else self.target), (), obj
            else:
                self.origin[position] = (index, None)
                yield _reject, (str(obj),), {}
            position += 1


class _SizedRows(_Rows):
    """:class:`_Rows` whose count is known (a file), so the progress bar shows an ETA."""

    def __len__(self) -> int:
        return self.total or 0


def _row(index: int, result: ga.Result[Any]) -> dict[str, Any]:
    error = result.error
    return {"index": index, "ok": result.ok, "value": result.value,
            "error": None if error is None else f"{type(error).__name__}: {error}",
            "attempts": result.attempts, "duration_s": round(result.duration_s, 6),
            "usage": result.usage, "cost_usd": result.cost_usd, "model": result.model,
            "cached": result.cached}


def _previous(output: str, resume: bool) -> dict[int, bool]:
    """Index → ok of the rows already in ``output`` (after dropping a torn last line)."""
    if output == "-":
        if resume:
            raise UsageProblem("--resume needs an --output file to resume, not stdout")
        return {}
    if not resume:
        if os.path.exists(output) and os.path.getsize(output) > 0:
            raise UsageProblem(f"{output} already holds results; pass --resume to continue it, "
                               "or choose a new --output path")
        return {}
    done: dict[int, bool] = {}
    twice: set[int] = set()
    try:
        for row in jsonl.repair(output):
            if row["index"] in done:
                twice.add(row["index"])
            done[row["index"]] = bool(row["ok"])
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise UsageProblem(f"cannot resume from {output}: {exc}") from None
    if twice:
        shown = ", ".join(map(str, sorted(twice)[:5])) + (", ..." if len(twice) > 5 else "")
        raise UsageProblem(f"cannot resume from {output}: {len(twice)} index(es) appear more than "
                           f"once ({shown}), as when two runs wrote it at once; keep one row per "
                           "index, or start a new --output")
    return done


class _ThreadpoolStdin(io.RawIOBase):
    """Standard input read in gevent's threadpool: waiting on a slow producer (``tail -f |``)
    parks only the greenlet reading, while the calls already started finish and are written."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = gevent.os.tp_read(sys.stdin.fileno(), len(buffer))
        buffer[:len(data)] = data
        return len(data)


def _open_input(path: str) -> tuple[IO[bytes], int | None]:
    """The input as bytes, and its count of non-blank lines when it is a file (None for stdin)."""
    if path == "-":
        if not ga.is_patched():
            return sys.stdin.buffer, None
        return io.BufferedReader(_ThreadpoolStdin(), buffer_size=1 << 16), None
    try:
        with open(path, "rb") as counting:  # one cheap pass, O(1) memory, for the ETA
            total = sum(1 for line in counting if line.strip())
        return open(path, "rb"), total  # closed by the caller
    except OSError as exc:
        raise UsageProblem(f"cannot read input {path}: {exc.strerror or exc}") from None


def _open_output(path: str) -> jsonl.Appender:
    """The output, locked: a second run on the same file is refused while this one lives."""
    try:
        return jsonl.Appender(path, exclusive=True)
    except BlockingIOError:
        raise UsageProblem(f"{path} is being written by another greenagents run; wait for it to "
                           "finish (then --resume), or choose another --output") from None
    except OSError as exc:
        raise UsageProblem(f"cannot write output {path}: {exc.strerror or exc}") from None


def _configure_tracking(output: str, enabled: bool) -> None:
    try:
        url = ga.settings().tracking  # GREENAGENTS_TRACKING, when set, wins over the default
        if not enabled:
            ga.configure(tracking=None)
        elif url is None:
            directory = Path(output).resolve().parent if output != "-" else Path.cwd()
            ga.configure(tracking=f"sqlite:///{directory / '.greenagents' / 'runs.db'}")
        else:
            ga.tracking.database_path(url)  # a bad URL is a usage error now, not one per call
    except ga.errors.ConfigError as exc:
        raise UsageProblem(str(exc)) from None


@cli.command()
@click.argument("target")
@click.option("--input", "input_path", required=True, metavar="PATH",
              help="JSON Lines of keyword arguments, one call per line; - for stdin.")
@click.option("--output", "output_path", required=True, metavar="PATH",
              help="JSON Lines of results, one per input line; - for stdout.")
@click.option("--concurrency", type=click.IntRange(1), default=None,
              help="Calls running at once (default: the max_concurrency setting, 20).")
@click.option("--resume", is_flag=True, help="Keep the rows already in --output; run the rest.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds allowed per call.")
@click.option("--quiet", is_flag=True, help="No progress bar (none when stderr is not a terminal).")
@click.option("--tracking/--no-tracking", default=True, show_default=True,
              help="Record every call in .greenagents/runs.db beside the output.")
@click.option("--max-errors", type=click.IntRange(0), default=None,
              help="Stop once more than N calls failed: no new call starts, and the calls "
                   "not finished are not written (--resume runs them).")
@click.option("--cache", "use_cache", is_flag=True,
              help="Reuse answers from .greenagents/cache.db beside the output (or the cache "
                   "setting's store), so a re-run pays only for new inputs.")
@click.option("--max-cost", "max_cost_usd", type=click.FloatRange(min=0, min_open=True),
              default=None, metavar="USD",
              help="Stop sending calls that could take the run past this many dollars "
                   "(they end as BudgetExceeded).")
@click.option("--celery", "celery_url", default=None, metavar="REDIS_URL",
              help="Run the calls on the Celery workers of this broker (greenagents.celery), "
                   "not here; TARGET must be importable by the workers.")
@click.option("--mode", type=click.Choice(["online", "batch", "auto"]), default="online",
              show_default=True, help="batch: the provider's Batch API (half price, within 24 h; "
              "--resume reattaches); auto: batch for 1,000+ rows unless --deadline is under 24 h.")
@click.option("--deadline", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds the whole run may take (online), and what --mode auto weighs.")
@click.option("--poll-interval", type=click.FloatRange(min=0, min_open=True), default=5.0,
              show_default=True, help="--mode batch: first seconds between polls (grows to 60).")
def run(target: str, input_path: str, output_path: str, concurrency: int | None, resume: bool,
        timeout: float | None, quiet: bool, tracking: bool, max_errors: int | None,
        use_cache: bool, max_cost_usd: float | None, celery_url: str | None, mode: str,
        deadline: float | None, poll_interval: float) -> None:
    """Call TARGET (module:Name or file.py:Name, an Agent class or a function) once per input line.

    Each result is appended to the output as one JSON line as soon as it completes:
    index, ok, value, error, attempts, duration_s, usage, cost_usd, model, cached.
    """
    if celery_url and max_errors is not None:
        raise UsageProblem("--max-errors is not supported with --celery yet; drop one of them")
    if celery_url and (use_cache or max_cost_usd):  # these settings live in this process only
        raise UsageProblem("--cache and --max-cost apply to local runs; with --celery set "
                           "GREENAGENTS_CACHE (a redis:// URL) in the workers, and a shared "
                           "ga.budget(..., storage=<the Redis>) in the task code")
    if mode != "online" and (use_cache or max_cost_usd):  # the Batch API path sends neither
        raise UsageProblem("--cache and --max-cost apply to --mode online runs; drop them or "
                           "use --mode online")
    fn = load_target(target)
    out = _open_output(output_path)  # locked before reading what a previous run left
    previous = _previous(output_path, resume)
    lines, total = _open_input(input_path)
    _configure_tracking(output_path, tracking)
    if use_cache and ga.settings().cache is None:  # GREENAGENTS_CACHE, when set, wins
        directory = Path(output_path).resolve().parent if output_path != "-" else Path.cwd()
        ga.configure(cache=f"sqlite:///{directory / '.greenagents' / 'cache.db'}")
    if mode != "online":
        lines.close()
        _run_batch(fn, input_path, output_path, out, previous, mode=mode, resume=resume,
                   deadline=deadline, poll_interval=poll_interval,
                   progress=not quiet and sys.stderr.isatty())  # exits unless auto chose online
        lines, total = _open_input(input_path)
    sized = total is not None
    agent = isinstance(fn, type) and issubclass(fn, ga.Agent)  # agents record their own calls
    rows = (_SizedRows if sized else _Rows)(fn, lines, set(previous), (total or 0) - len(previous),
                                            by_line=agent and not celery_url)
    failed = sum(not ok for ok in previous.values())
    run_id = runs.new_run_id()
    runs.run_id.set(run_id)  # the stream and every call it starts copy this context
    progress = not quiet and sys.stderr.isatty()
    if celery_url:
        from greenagents import celery as ga_celery  # the optional extra, only when asked for

        results = ga_celery.stream(ga_celery.app_for(celery_url), rows, timeout=timeout,
                                   progress=progress)
    else:
        results = ga.stream(rows, max_concurrent=concurrency, timeout=timeout, deadline=deadline,
                            progress=progress, max_errors=max_errors, warn_failures=False,
                            max_cost_usd=max_cost_usd)
    status = 0
    tally = ErrorTally()
    written = aborted = 0
    try:
        with lines, out:
            for result in results:
                index, kwargs = rows.origin.pop(result.index or 0)
                if isinstance(result.error, ga.errors.Aborted):
                    aborted += 1  # not run: left out of the output, so --resume runs it
                    continue
                try:
                    out.write(_row(index, result))
                except OSError as exc:  # a full disk, /dev/full: the rows before it are kept
                    raise UsageProblem(f"cannot write output {output_path}: "
                                       f"{exc.strerror or exc}; free space, then --resume") from None
                written += 1
                if result.error is not None:
                    tally.add(result.error)
                if kwargs is None:  # a malformed line: counted in the log under the target
                    ga.tracking.record(dataclasses.replace(result, target=target_name(fn)),
                                       index=index)
                elif not agent:
                    ga.tracking.record(result, kwargs, index=index)
    except KeyboardInterrupt:
        click.echo("interrupted: finished rows are written; add --resume to complete the run",
                   err=True)
        status = _INTERRUPTED
    finally:
        results.close()  # type: ignore[attr-defined]  # stops the calls still running
        ga.tracking.flush(timeout=30)
    failed += tally.failed + aborted
    if status != _INTERRUPTED and (failed or not quiet):  # on stderr, terminal or not
        where = "stdout" if output_path == "-" else output_path
        earlier = f" (+{len(previous):,} from before, {failed - tally.failed:,} failed)" \
            if previous else ""
        click.echo(f"greenagents run {run_id}: {written:,} rows written to {where}{earlier}: "
                   f"{written - tally.failed:,} ok, {tally.failed:,} failed", err=True)
        for line in tally.lines():
            click.echo(line, err=True)
        if aborted:
            click.echo(f"stopped: more than --max-errors {max_errors} calls failed; "
                       f"{aborted:,} calls not finished are not written: fix the cause, then "
                       "add --resume to run them", err=True)
    sys.exit(status or (1 if failed else 0))


def _run_batch(fn: Callable[..., Any], input_path: str, output_path: str, out: jsonl.Appender,
               previous: dict[int, bool], *, mode: str, resume: bool, deadline: float | None,
               poll_interval: float, progress: bool) -> None:
    """``run --mode batch|auto``: the input as one batch job (see :mod:`greenagents.batchrun`);
    exits with the run's status, or returns when ``auto`` chose online."""
    from greenagents import batchrun

    if "-" in (input_path, output_path):
        raise UsageProblem(f"--mode {mode} needs --input and --output files (the input's hash "
                           "and the output's name are how --resume finds the job)")
    db = ga.settings().tracking or str(Path(output_path).resolve().parent / ".greenagents" /
                                       "runs.db")
    job_run = batchrun.BatchRun(output_path, ga.tracking.database_path(db))
    agent = fn if isinstance(fn, type) and issubclass(fn, ga.Agent) else None
    with open(input_path, "rb") as source:
        data = source.read()
    objects = list(jsonl.read_objects(io.BytesIO(data)))
    if job_run.choose(mode, fn, rows=len(objects) - len(previous), deadline=deadline,
                      resume=resume) == "online":
        click.echo("--mode auto: online (see greenagents run --help for the rule)", err=True)
        return
    if agent is None:
        raise UsageProblem(f"--mode batch runs Agent classes; {fn!r:.60} has no Batch API")
    try:
        job, covered = job_run.start(agent, data, objects, set(previous), resume=resume,
                                     poll_interval=poll_interval,
                                     fallback="online" if mode == "auto" else None)
    except (ga.errors.ConfigError, ga.errors.InputError) as exc:
        raise UsageProblem(str(exc)) from None
    except KeyboardInterrupt:  # each step is recorded before it is taken: resumable as is
        click.echo("interrupted while submitting; rerun the same command with --resume",
                   err=True)
        sys.exit(_INTERRUPTED)
    click.echo(f"batch job {job.id}: {len(covered)} rows in {len(job.parts)} provider batch(es); "
               "Ctrl-C detaches (then --resume reattaches)", err=True)
    try:
        results = batchrun.results_by_line(job.wait(progress=progress), covered)
    except KeyboardInterrupt:
        if sys.stdin.isatty() and click.confirm("\ncancel the provider batches (no: detach)?",
                                                default=False, err=True):
            job.cancel()
            click.echo("cancelled; rerun with --resume to write what finished", err=True)
        else:
            click.echo(f"detached from batch job {job.id}: it keeps running at the provider; "
                       "rerun the same command with --resume to collect it", err=True)
        sys.exit(_INTERRUPTED)
    failed = sum(not ok for ok in previous.values())
    with out:
        for index, obj in objects:
            if index in previous:
                continue
            result = results.get(index) or ga.Result(index=index, error=ga.errors.InputError(
                str(obj)), attempts=0)
            out.write(_row(index, result))
            failed += not result.ok
    job_run.written()
    sys.exit(1 if failed else 0)


# --------------------------------------------------------------------------------------- stats


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _since(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """``30m``, ``1h``, ``7d`` → the unix time that long ago."""
    if value is None:
        return None
    amount, unit = value[:-1], value[-1:]
    try:
        return time.time() - float(amount) * _UNITS[unit]
    except (KeyError, ValueError):
        raise click.BadParameter(f"{value!r}: use a number and a unit (s, m, h, d, w), e.g. 1h") from None


def _default_db() -> str:
    """The log ``stats`` and ``dashboard`` read without ``--db``: the tracking setting's, else
    ``greenagents run``'s default in this directory."""
    return ga.settings().tracking or str(Path(".greenagents") / "runs.db")


@cli.command()
@click.option("--db", default=None, metavar="PATH",
              help="Execution log (default: the tracking setting, else .greenagents/runs.db).")
@click.option("--since", callback=_since, default=None, metavar="AGE",
              help="Only calls newer than this, e.g. 30m, 1h, 7d.")
@click.option("--run", "run_id", default=None, metavar="ID",
              help="Only the calls of this run (its id is printed by `greenagents run`).")
@click.option("--by", type=click.Choice(["target", "model", "run", "agent"]), default="target",
              show_default=True, help="Group by target (agent class or function), model or run; "
              "`agent` is the older name of `target`.")
@click.option("--errors", "show_errors", is_flag=True,
              help="List the failed calls (newest first) with run, input index and whole message.")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True,
              help="How many failed calls --errors lists.")
@click.option("--format", "form", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True, help="How to print (json and csv for other tools).")
@click.option("--json", "form", flag_value="json", help="Same as --format json.")
@click.option("--csv", "form", flag_value="csv", help="Same as --format csv.")
def stats(db: str | None, since: float | None, run_id: str | None, by: str, show_errors: bool,
          limit: int, form: str) -> None:
    """Summarise logged calls: counts, success rate, p50/p95 latency, tokens, cost, cache hits and
    the cost they saved, calls a budget stopped, top errors."""
    path = db or _default_db()
    try:
        groups = ga.tracking.summary(path, since=since, by=by, run=run_id)
        failed = ga.tracking.failures(path, since=since, run=run_id, limit=limit) \
            if show_errors else []
    except ga.errors.ConfigError as exc:
        raise UsageProblem(str(exc)) from None
    click.echo(render(groups, failed, by=by, form=form, show_errors=show_errors,
                                empty="no calls logged" + (" in that period" if since else "")
                                + (f" for run {run_id}" if run_id else "")), nl=False)


# ----------------------------------------------------------------------------------- dashboard


@cli.command()
@click.option("--db", default=None, metavar="PATH",
              help="Execution log (default: the tracking setting, else .greenagents/runs.db).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind; any but loopback needs --token.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option("--token", default=None, metavar="SECRET",
              help="Required on every request (default: $GREENAGENTS_DASHBOARD_TOKEN).")
def dashboard(db: str | None, host: str, port: int, token: str | None) -> None:
    """Serve a web page over the execution log: runs, charts, calls; live while a run writes."""
    try:
        from greenagents import dashboard as web
    except ImportError as exc:
        raise UsageProblem(f"the dashboard needs its extra: pip install 'greenagents[dashboard]' "
                           f"({exc})") from None
    try:
        web.serve(db or _default_db(), host=host, port=port, token=token, announce=click.echo)
    except ga.errors.ConfigError as exc:
        raise UsageProblem(str(exc)) from None
    except OSError as exc:
        raise UsageProblem(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    except KeyboardInterrupt:
        sys.exit(_INTERRUPTED)


# -------------------------------------------------------------------------------------- doctor


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option("--concurrency", type=click.IntRange(min=1), default=None,
              help="Calls you want in flight at once (default: max_concurrency).")
@click.option("--watch", "script", type=click.Path(exists=True, dir_okay=False),
              help="Run SCRIPT under gevent's monitor thread, reporting what blocks the hub.")
@click.option("--threshold", type=click.FloatRange(min=0.001), default=0.1, show_default=True,
              help="With --watch: report the hub held longer than this many seconds.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def doctor(concurrency: int | None, script: str | None, threshold: float,
           args: tuple[str, ...]) -> None:
    """Check this environment for what breaks or slows thousands of green calls (exit 1 if any)."""
    from greenagents import checkup

    if script is not None:
        sys.exit(checkup.watch(script, list(args), threshold))
    if args:
        raise UsageProblem(f"unexpected argument {args[0]!r} (script arguments go after --watch SCRIPT)")
    diagnosis = checkup.doctor(concurrency)
    click.echo(str(diagnosis))
    sys.exit(0 if diagnosis.ok else 1)
