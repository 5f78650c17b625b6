"""Patching and the honest unpatched fallback, each in a fresh interpreter."""

from __future__ import annotations

from .conftest import run_python


def test_import_greenagents_imports_no_ssl_or_requests() -> None:
    out = run_python("""
        import sys
        import greenagents as ga
        ga.configure(max_concurrency=5)
        ga.Result, ga.errors
        print(sorted(m for m in ("ssl", "requests", "urllib3") if m in sys.modules))
        print(ga.is_patched())
        ga.patch()
        print(ga.is_patched(), ga.available())
    """)
    assert out.stdout.split("\n")[:3] == ["[]", "False", "True True"], out.stderr
    assert "Warning" not in out.stderr


def test_import_monkey_patches_idempotently() -> None:
    out = run_python("""
        import greenagents.monkey
        import greenagents as ga
        print(ga.is_patched(), ga.patch(), ga.patch())
    """)
    assert out.stdout.strip() == "True False False", out.stderr


def test_a_partial_patch_is_available_but_not_patched() -> None:
    out = run_python("""
        from gevent import monkey
        monkey.patch_all(thread=False)   # green I/O, but real threads: not what ga.patch() does
        import greenagents as ga
        print(ga.available(), ga.is_patched())
    """)
    assert out.stdout.strip() == "True False", out.stderr


def test_late_patch_warns_once_naming_what_to_move() -> None:
    out = run_python("""
        import warnings
        warnings.simplefilter("default")
        import requests
        import greenagents as ga
        ga.patch()
        ga.patch()
    """)
    assert out.stderr.count("LatePatchWarning") == 1
    assert "requests" in out.stderr and "import greenagents.monkey" in out.stderr


def test_unpatched_batch_falls_back_to_threads_and_stays_concurrent() -> None:
    out = run_python("""
        import time, threading
        import greenagents as ga
        start = time.monotonic()
        results = ga.each(range(20), lambda i: time.sleep(0.5) or threading.get_ident(),
                          max_concurrent=20)
        elapsed = time.monotonic() - start
        more = ga.batch([(time.sleep, (0.2,), {})] * 10, max_concurrent=10)
        print(all(r.ok for r in results + more), len({r.value for r in results}) > 1, elapsed < 5)
        print(ga.available())
        slow = ga.each([0.0, 3.0], time.sleep, timeout=0.3)
        print(slow[0].ok, type(slow[1].error).__name__)
    """)
    lines = out.stdout.split("\n")
    assert lines[:3] == ["True True True", "False", "True Timeout"], out.stderr
    assert out.stderr.count("NotPatchedWarning") == 1
    assert "import greenagents.monkey" in out.stderr


def test_unpatched_stream_is_correct_and_bounded() -> None:
    out = run_python("""
        import time, threading
        import greenagents as ga
        lock = threading.Lock(); running = peak = 0
        def work(i):
            global running, peak
            with lock:
                running += 1; peak = max(peak, running)
            time.sleep(0.02)
            with lock:
                running -= 1
            return i
        got = sorted(r.value for r in ga.stream([(work, (i,), {}) for i in range(100)],
                                                max_concurrent=4))
        print(got == list(range(100)), peak)
    """)
    assert out.stdout.strip() == "True 4", out.stderr


def test_ctrl_c_stops_a_patched_batch_within_a_second() -> None:
    out = run_python("""
        import greenagents.monkey
        import os, signal, time, gevent
        import greenagents as ga
        finished = []
        def work(i):
            gevent.sleep(30); finished.append(i)
        gevent.spawn_later(0.3, os.kill, os.getpid(), signal.SIGINT)
        start = time.monotonic()
        try:
            ga.each(range(100), work, max_concurrent=100)
        except KeyboardInterrupt:
            print("interrupted", time.monotonic() - start < 1.5, finished == [])
    """, timeout=30)
    assert out.stdout.strip() == "interrupted True True", out.stderr


def test_ctrl_c_stops_an_unpatched_batch() -> None:
    out = run_python("""
        import os, signal, threading, time
        import greenagents as ga
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        start = time.monotonic()
        try:
            ga.each(range(10), lambda i: time.sleep(30), max_concurrent=10)
        except KeyboardInterrupt:
            print("interrupted", time.monotonic() - start < 1.5)
    """, timeout=30)
    assert out.stdout.strip() == "interrupted True", out.stderr


def test_sdk_clients_build_after_patching_even_with_trio_installed() -> None:
    # httpcore2 (under openai/anthropic) imports trio, whose import reads select.epoll — which
    # gevent removes. Failed before patch() lent epoll back for trio's import.
    out = run_python("""
        import greenagents.monkey
        import select
        import openai, anthropic
        openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="x")
        anthropic.Anthropic(base_url="http://127.0.0.1:9", api_key="x")
        print("built", hasattr(select, "epoll"))
    """)
    assert out.stdout.strip() == "built False", out.stderr


def test_grpc_imported_before_patching_is_warned_about() -> None:
    # grpc is not a dependency: a stand-in module is enough for the detection
    out = run_python("""
        import sys, types, warnings
        warnings.simplefilter("default")
        sys.modules["grpc"] = types.ModuleType("grpc")
        import greenagents as ga
        ga.patch()
    """)
    assert "grpc was imported" in out.stderr and "init_gevent()" in out.stderr


def test_multiprocessing_pool_warns_after_patching() -> None:
    out = run_python("""
        import warnings
        import greenagents.monkey
        import multiprocessing.pool
        from greenagents.patching import PitfallWarning
        warnings.simplefilter("error", PitfallWarning)  # raised before the Pool (which hangs) is built
        try:
            multiprocessing.pool.Pool(1)
        except PitfallWarning as warning:
            print(warning)
    """, timeout=30)
    assert "ProcessPoolExecutor" in out.stdout, out.stderr
