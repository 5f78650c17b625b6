"""Run the benchmarks: ``python -m bench [--quick | --smoke] [--only fanout,memory,...]``.

* full (default): every figure, 3 repetitions, N up to 10,000 — about 16 minutes on 2 cores;
  writes ``bench/RESULTS.md``, ``bench/*.png`` and ``bench/results.json``.
* ``--quick``: smaller sizes, 1 repetition — under 3 minutes; same outputs.
* ``--only X,Y --update``: re-run those figures and replace only their sections of RESULTS.md
  (the note at its top says which were updated, when, in which mode).
* ``--only fanout --sizes 10000``: the fan-out figure at those N only (e.g. issue #22's goals).
* ``--smoke``: tiny sizes, every contender once, outputs only to a temporary directory (CI runs
  it so the benchmarks never rot); fails (exit 1) if any contender that should run failed.

``--setup-peers`` creates the peers venv: the ``peers`` extra (LiteLLM, instructor, dspy, ...,
whose pins clash with ours; see ``bench.harness``), for the LiteLLM contender and ``bench.peers``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import harness, report

FIGURES = ("fanout", "memory", "overhead", "retry_heavy", "stream_scale", "gunicorn_load",
           "celery_scale", "dashboard_pages", "tools", "streaming", "stats_log", "batch_cost",
           "peers", "learned_limits")
HERE = Path(__file__).resolve().parent


def _failures(ctx: harness.Context) -> list[str]:
    return [f"{key[1]} ({key[0]}, n={key[2]}): {r['error']}"
            for key, reports in ctx.cache.items() for r in reports if "error" in r]


def _titled(sections: Any) -> dict[str, Any]:
    """Sections of an older results.json, which stored them as an untitled list."""
    return sections if isinstance(sections, dict) else {str(i): d for i, d in enumerate(sections)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smaller sizes, < 3 minutes")
    mode.add_argument("--smoke", action="store_true", help="tiny sizes, temp dir only, < 60 s")
    mode.add_argument("--setup-peers", action="store_true", help="create the peers venv")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(FIGURES)}")
    parser.add_argument("--update", action="store_true",
                        help="keep RESULTS.md's other figures; replace only those run")
    parser.add_argument("--repeat", type=int, help="repetitions per point (default 3 / 1 / 1)")
    parser.add_argument("--out", type=Path, help="output directory (default: bench/)")
    parser.add_argument("--sizes", type=lambda text: [int(n) for n in text.split(",")],
                        help="only these N (comma-separated), in the figures that sweep N "
                             "(fanout), e.g. --only fanout --sizes 10000")
    args = parser.parse_args(argv)
    if args.setup_peers:
        return report.setup_peers()
    name = "smoke" if args.smoke else "quick" if args.quick else "full"
    figures = args.only.split(",") if args.only else list(FIGURES)
    unknown = sorted(set(figures) - set(FIGURES))
    if unknown:
        parser.error(f"unknown figure(s) {unknown}; choose from {', '.join(FIGURES)}")
    temp = tempfile.TemporaryDirectory(prefix="bench-smoke-") if args.smoke else None
    out = Path(temp.name) if temp else (args.out or HERE)
    out.mkdir(parents=True, exist_ok=True)
    ctx = harness.Context(mode=name, out=out,
                          repeat=args.repeat or {"smoke": 1, "quick": 1, "full": 3}[name],
                          sizes=args.sizes)
    harness.raise_nofile()
    load_before, started = report.load(), time.monotonic()
    ctx.log(f"{name} run of {', '.join(figures)} into {out} (load {load_before})")
    sections: list[harness.Section] = []
    for figure in figures:
        module: Any = importlib.import_module(f"bench.{figure}")
        sections.append(module.run(ctx))
    results = out / "RESULTS.md"
    wall_s = time.monotonic() - started
    if args.update and results.exists():
        results.write_text(report.update(results.read_text(), ctx, figures, sections, load_before,
                                         wall_s))
    else:
        results.write_text(report.render(ctx, sections, load_before, wall_s))
    raw = {"|".join(map(str, key)): reports for key, reports in ctx.cache.items()}
    stored = {"mode": name, "runs": raw, "sections": {s.title: s.data for s in sections}}
    data = out / "results.json"
    if args.update and data.exists():  # the kept figures' raw runs stay beside the new ones
        previous = json.loads(data.read_text())
        stored = {"mode": f"{previous.get('mode')} + {name} update",
                  "runs": {**previous.get("runs", {}), **raw},
                  "sections": {**_titled(previous.get("sections", {})), **stored["sections"]}}
    data.write_text(json.dumps(stored, indent=1, default=str))
    ctx.log(f"wrote {results} and {len([p for s in sections for p in s.plots])} plots")
    failures = _failures(ctx) + [f for s in sections for f in s.data.get("failures", [])]
    if temp is not None:
        temp.cleanup()
        if failures:
            print("smoke run failures:\n  " + "\n  ".join(failures), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
