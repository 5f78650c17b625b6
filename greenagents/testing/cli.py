"""``greenagents sim`` / ``python -m greenagents.testing``: the simulator as a foreground server.

Prints exactly one line to stdout once listening — ``greenagents sim listening on
http://HOST:PORT/v1`` — which :class:`~greenagents.testing.simulator.SimulatorProcess` parses.
Stop it with Ctrl-C or SIGTERM.

>>> from click.testing import CliRunner
>>> print(CliRunner().invoke(sim, ["--fault", "nope=0.1"]).output)  # doctest: +ELLIPSIS
Usage: ...
Error: Invalid value for '--fault': unknown fault 'nope'; valid faults: rate_limit, ...
"""

from __future__ import annotations

import os
import signal

import click

from greenagents.testing.faults import check_name
from greenagents.testing.options import API_KEY_ENV, SimOptions


def _parse_faults(ctx: click.Context, param: click.Parameter,
                  values: tuple[str, ...]) -> dict[str, float]:
    faults: dict[str, float] = {}
    for value in values:
        name, sep, rate = value.partition("=")
        try:
            check_name(name)
            faults[name] = float(rate) if sep else 1.0
        except ValueError as exc:
            raise click.BadParameter(str(exc).replace("could not convert string to float",
                                                      f"{value!r}: rate must be a number")) from exc
    return faults


@click.command("sim")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=0, show_default=True, help="Port; 0 picks a free one.")
@click.option("--latency", default=0.0, show_default=True,
              help="Seconds to first token (the median if --latency-p99 is given).")
@click.option("--latency-p99", type=float, default=None, help="p99 of a lognormal latency.")
@click.option("--token-latency", default=0.0, show_default=True,
              help="Extra seconds per output token.")
@click.option("--fault", "faults", multiple=True, callback=_parse_faults, metavar="NAME=RATE",
              help="Inject a fault with this probability; repeatable, e.g. --fault rate_limit=0.3")
@click.option("--fault-attempts", type=int, default=None,
              help="Only the first N tries of a request (model and conversation) can fail.")
@click.option("--retry-after", default=1.0, show_default=True,
              help="Seconds announced by the rate_limit fault.")
@click.option("--rpm", type=int, default=None, help="Requests per minute per API key.")
@click.option("--tpm", type=int, default=None, help="Tokens per minute per API key.")
@click.option("--rate-window", default=60.0, show_default=True,
              help="Seconds of the --rpm/--tpm window (shorter: tests of the reset).")
@click.option("--api-key", envvar=API_KEY_ENV, default=None,
              help=f"Require this API key (or set {API_KEY_ENV}).")
@click.option("--seed", default=0, show_default=True, help="Seed for answers and faults.")
@click.option("--answer-words", type=int, default=None,
              help="Plain-text answers run to this many words (long streams).")
@click.option("--batch-delay", default=0.0, show_default=True,
              help="Seconds until a batch (OpenAI Batches, Anthropic Message Batches) ends.")
@click.option("--batch-row-failure", default=0.0, show_default=True,
              help="Share of batch rows answered with an error.")
@click.option("--batch-row-expiry", default=0.0, show_default=True,
              help="Share of batch rows left expired.")
@click.option("--batch-max-rows", type=int, default=None,
              help="Requests per batch (default: the provider's limit).")
@click.option("--batch-max-bytes", type=int, default=None,
              help="Bytes per batch file / request (default: the provider's limit).")
@click.option("--batch-create-latency", default=0.0, show_default=True,
              help="Seconds a batch create waits; a client hanging up meanwhile creates nothing.")
def sim(**knobs: object) -> None:
    """Serve a local OpenAI/Anthropic-compatible LLM simulator until interrupted."""
    try:
        options = SimOptions(**knobs)  # type: ignore[arg-type]
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    serve_forever(options)


def serve_forever(options: SimOptions) -> None:
    """Serve in this process's main thread until SIGINT/SIGTERM."""
    import gevent
    import gevent.event

    from greenagents.testing.server import SimApp, make_server

    raise_open_files_limit()
    server = make_server(SimApp(options), options.host, options.port)
    try:
        server.start()
    except OSError as exc:  # the port is taken, or the host is not ours
        from greenagents.cli import UsageProblem

        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise UsageProblem(f"cannot listen on {options.host}:{options.port} ({reason}); pick "
                           "another --port, or 0 for a free one") from None
    stopped = gevent.event.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, stopped.set)
    click.echo(f"greenagents sim listening on http://{options.host}:{server.server_port}/v1")
    stopped.wait()
    server.stop(timeout=0.5)


def raise_open_files_limit() -> None:
    """Let this process hold as many connections as the hard limit allows (default soft limits
    of 1,024 would cap a 10,000-connection benchmark)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
