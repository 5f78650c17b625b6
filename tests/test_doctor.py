"""ga.doctor() and `greenagents doctor`: one test per finding, each bad condition in a subprocess."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import greenagents as ga

# Prints the findings of ga.doctor() as JSON: {name: [ok, detail, fix]} plus the raw facts.
REPORT = """
    import json
    diagnosis = ga.doctor(concurrency=CONCURRENCY)
    print(json.dumps({"findings": {f.name: [f.ok, f.detail, f.fix] for f in diagnosis.findings},
                      "ok": diagnosis.ok, "threadpool": diagnosis.threadpool_size,
                      "resolver": diagnosis.resolver, "early": diagnosis.imported_before_patch}))
"""


def _diagnose(prelude: str, *, concurrency: int = 100, path: Path | None = None,
              env: dict[str, str] | None = None, nofile: int | None = None) -> dict:  # type: ignore[type-arg]
    code = textwrap.dedent(prelude) + textwrap.dedent(REPORT).replace("CONCURRENCY", str(concurrency))
    environ = dict(os.environ, **(env or {}))
    if path is not None:
        environ["PYTHONPATH"] = os.pathsep.join([str(path), environ.get("PYTHONPATH", "")])

    def limit_files() -> None:
        if nofile is not None:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

    done = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True,
                          timeout=120, env=environ, preexec_fn=limit_files)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _fake_distribution(root: Path, name: str, version: str) -> Path:
    """Installed-package metadata claiming ``name==version``, first on the path of a subprocess."""
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return root


def test_a_properly_patched_process_passes_the_patching_checks() -> None:
    report = _diagnose("import greenagents.monkey\nimport requests\nimport greenagents as ga\n")
    assert report["findings"]["patched"][0] and report["findings"]["imported-before-patch"][0]


def test_unpatched_process_and_what_would_be_too_late() -> None:
    report = _diagnose("import requests\nimport greenagents as ga\n")
    patched, early = report["findings"]["patched"], report["findings"]["imported-before-patch"]
    assert not patched[0] and "greenagents.monkey" in patched[2]
    assert not early[0] and "requests" in early[1] and "urllib3" in early[1]


def test_modules_imported_before_a_late_patch_are_named() -> None:
    report = _diagnose("import requests\nimport greenagents as ga\nga.patch()\n")
    assert report["findings"]["patched"][0]
    assert not report["findings"]["imported-before-patch"][0]
    assert {"requests", "urllib3"} <= set(report["early"])


def test_old_pydantic_core_is_flagged(tmp_path: Path) -> None:
    report = _diagnose("import greenagents as ga\n",
                       path=_fake_distribution(tmp_path, "pydantic-core", "2.10.1"))
    ok, detail, fix = report["findings"]["pydantic-core"]
    assert not ok and "2.10.1" in detail and "segfault" in detail and ">=2.18" in fix


@pytest.mark.parametrize(("version", "leaks"), [("1.0.9", True), ("2.0.0", False)])
def test_httpcore_1_is_flagged_for_its_pool_leak(tmp_path: Path, version: str, leaks: bool) -> None:
    report = _diagnose("import greenagents as ga\n", path=_fake_distribution(tmp_path, "httpcore", version))
    ok, detail, fix = report["findings"]["httpcore"]
    assert ok is not leaks
    if leaks:
        assert "stuck" in detail and "httpx2" in fix and "timeout" in fix


@pytest.mark.parametrize("initialized", [False, True])
def test_grpc_without_gevent_support_is_flagged(tmp_path: Path, initialized: bool) -> None:
    # A stand-in for grpcio (not installed here): its cygrpc module keeps `gevent_g` None until
    # grpc.experimental.gevent.init_gevent() runs, which is what doctor reads.
    package = tmp_path / "grpc" / "_cython"
    package.mkdir(parents=True)
    (tmp_path / "grpc" / "__init__.py").write_text("from grpc._cython import cygrpc\n")
    (package / "__init__.py").write_text("")
    (package / "cygrpc.py").write_text(f"gevent_g = {'object()' if initialized else 'None'}\n")
    _fake_distribution(tmp_path, "grpcio", "1.62.0")
    report = _diagnose("import greenagents.monkey\nimport grpc\nimport greenagents as ga\n",
                       path=tmp_path)
    ok, detail, fix = report["findings"]["grpc"]
    assert ok is initialized
    assert ("NOT initialized" in detail) is not initialized and "init_gevent()" in fix


def test_threadpool_size_and_resolver_are_reported() -> None:
    report = _diagnose("import greenagents.monkey, gevent\nimport greenagents as ga\n"
                       "gevent.get_hub().threadpool.maxsize = 50\n", env={"GEVENT_RESOLVER": "ares"})
    assert report["threadpool"] == 50 and report["resolver"] == "ares"
    blocking = _diagnose("import greenagents.monkey\nimport greenagents as ga\n",
                         env={"GEVENT_RESOLVER": "block"})
    assert not blocking["findings"]["resolver"][0]


def test_too_few_open_files_for_the_concurrency() -> None:
    report = _diagnose("import greenagents.monkey\nimport greenagents as ga\n", concurrency=1000,
                       nofile=256)
    ok, detail, fix = report["findings"]["open-files"]
    assert not ok and "256" in detail and "ulimit -n 1064" in fix
    assert _diagnose("import greenagents as ga\n", concurrency=100, nofile=256)["findings"]["open-files"][0]


def test_the_command_prints_the_findings_and_fails_on_a_problem(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(_fake_distribution(tmp_path, "pydantic-core", "2.10.1")), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "greenagents", "doctor", "--concurrency", "10"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1, done.stderr
    assert "[!!] pydantic-core" in done.stdout and "[ok] patched" in done.stdout
    assert "problem(s)" in done.stdout.splitlines()[-1]


def test_watch_names_the_stack_that_blocked_the_hub(tmp_path: Path) -> None:
    script = tmp_path / "blocking.py"
    script.write_text(textwrap.dedent("""
        import sys, gevent, gevent.monkey

        def crunch():
            gevent.monkey.get_original("time", "sleep")(0.5)  # holds the hub: nothing else runs

        gevent.spawn(crunch).join()
        print("args", sys.argv[1:])
        sys.exit(3)
    """))
    done = subprocess.run([sys.executable, "-m", "greenagents", "doctor", "--watch", str(script),
                           "--threshold", "0.1", "one", "two"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 3
    assert "args ['one', 'two']" in done.stdout
    assert "held the hub for more than 0.1s" in done.stderr
    assert f'File "{script}", line 5, in crunch' in done.stderr
    assert done.stderr.count("in crunch") == 1  # one report per block, not one per check


def test_in_process_diagnosis_is_typed() -> None:
    diagnosis = ga.doctor(concurrency=10)
    assert isinstance(diagnosis, ga.Diagnosis) and diagnosis.patched and diagnosis.concurrency == 10
    assert str(diagnosis).splitlines()[-1].startswith("greenagents doctor:")
