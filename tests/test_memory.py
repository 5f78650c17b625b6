"""Memory per in-flight call, by structure: 1,000 agent calls held open at once stay under a
generous bound per call, so a regression (a buffer kept per call, a leak) fails here without
timing anything. The figure itself is bench/memory.py's (about 15-35 KB per call there).
"""

from __future__ import annotations

import json
import os

import pytest

from .conftest import run_python

# Generous: ~1.5x what was measured after issue #22's flatter call path (2 cores, loaded): urllib3
# 32.7 KB, geventhttpclient 21.0 KB (before it: 34.5 and 33.3 KB).
BOUND_KB = {"urllib3": 48, "geventhttpclient": 32}
# greenagents' own frames between a batch worker's start and its socket wait (run, calls, agent
# x4, provider, http, transport): each one more is stack every in-flight call keeps.
OWN_FRAMES = 10


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="reads Linux's VmHWM")
def test_a_thousand_calls_in_flight_stay_under_the_bound(http_transport: str) -> None:
    done = run_python("""
        import greenagents.monkey
        import json, re
        import greenagents as ga
        from greenagents.testing import Simulator
        from pydantic import BaseModel

        def status_kb(field):
            return int(re.search(field + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1))

        class Sentiment(BaseModel):
            label: str
            confidence: float

        with Simulator(latency=8).start_process() as sim:
            class Probe(ga.Agent):
                model = "openai/gpt-4o-mini"
                output = Sentiment
                base_url = sim.base_url

            assert Probe.call("warm").ok  # imports, pools, schemas: outside the figure
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")  # VmHWM := current RSS
            base = status_kb("VmRSS")
            results = ga.batch([(Probe, {"input": f"call {i}"}) for i in range(1000)],
                               max_concurrent=1000)
            print(json.dumps({"per_call_kb": (status_kb("VmHWM") - base) / 1000,
                              "ok": sum(r.ok for r in results),
                              "peak_in_flight": sim.stats()["peak_in_flight"]}))
    """, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["ok"] == 1000
    assert report["peak_in_flight"] >= 800, report  # open at once (a loaded CI starts them slowly)
    assert report["per_call_kb"] < BOUND_KB[http_transport], report
    print(f"memory per in-flight call: {report['per_call_kb']:.1f} KB")  # -s shows it


@pytest.mark.usefixtures("http_transport")
def test_few_frames_of_ours_between_a_call_and_its_socket() -> None:
    done = run_python("""
        import greenagents.monkey
        import gc, json, gevent
        import greenagents as ga
        from greenagents.testing import Simulator
        from pydantic import BaseModel

        class Sentiment(BaseModel):
            label: str
            confidence: float

        def own_frames(greenlet):
            frame, ours, waiting = greenlet.gr_frame, 0, False
            while frame is not None:
                path = frame.f_code.co_filename
                ours += "/greenagents/" in path and "/site-packages/" not in path
                waiting = waiting or frame.f_code.co_name in ("recv", "recv_into", "readinto")
                frame = frame.f_back
            return ours if waiting else None

        with Simulator(latency=3).start_process() as sim:
            class Probe(ga.Agent):
                model = "openai/gpt-4o-mini"
                output = Sentiment
                base_url = sim.base_url
                retries = 2

            assert Probe.call("warm").ok
            batch = gevent.spawn(ga.batch, [(Probe, {"input": f"call {i}"}) for i in range(50)],
                                 max_concurrent=50)
            counts = []
            for _ in range(40):
                gevent.sleep(0.05)
                counts = [n for g in gc.get_objects() if isinstance(g, gevent.Greenlet)
                          and g.gr_frame is not None and (n := own_frames(g)) is not None]
                if len(counts) == 50:
                    break
            print(json.dumps({"waiting": len(counts), "most": max(counts, default=None),
                              "ok": sum(r.ok for r in batch.get())}))
    """, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["ok"] == 50 and report["waiting"] >= 25, report
    assert report["most"] <= OWN_FRAMES, report


# What a waiting agent call keeps that the cyclic GC walks (each full collection visits every one
# of them: at 10,000 in flight the GC was ~20% of the client's CPU). Measured after issue #22's
# cuts, 200 calls in flight: 46-47 (geventhttpclient) and 65-66 (urllib3); 56 and 75 before.
TRACKED_PER_CALL = {"geventhttpclient": 51, "urllib3": 70}
# Saved C stack of a waiting batch worker beyond a bare greenlet waiting in the same request:
# ours adds only Python frames, which live on CPython's data stack. A C-level call on the way
# (``Context.run`` as the greenlet's function, ``f(*args, **kwargs)``) added ~0.1 and ~0.6 KB:
# measured -48 to +48 B after issue #22's cuts, 688-784 B before.
EXTRA_C_STACK_BYTES = 400


def test_a_waiting_call_keeps_few_tracked_objects_and_no_c_frames_of_ours(
        http_transport: str) -> None:
    done = run_python("""
        import greenagents.monkey
        import gc, json, statistics, gevent
        import greenagents as ga
        from greenagents import http
        from greenagents.testing import Simulator
        from pydantic import BaseModel

        class Sentiment(BaseModel):
            label: str
            confidence: float

        def waiting(exclude):
            return [g for g in gc.get_objects() if isinstance(g, gevent.Greenlet)
                    and g not in exclude and g.gr_frame is not None]

        with Simulator(latency=3).start_process() as sim:
            class Probe(ga.Agent):
                model = "openai/gpt-4o-mini"
                output = Sentiment
                base_url = sim.base_url

            assert Probe.call("warm").ok
            bare = gevent.spawn(http.request, "POST", sim.base_url + "/chat/completions",
                                b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}',
                                {"content-type": "application/json"}, timeout=30)
            gevent.sleep(0.5)
            gc.collect()
            before = len(gc.get_objects())
            batch = gevent.spawn(ga.batch, [(Probe, {"input": f"call {i}"}) for i in range(200)],
                                 max_concurrent=200)
            for _ in range(40):
                gevent.sleep(0.05)
                if sim.stats()["in_flight"] >= 201:
                    break
            gevent.sleep(0.3)
            tracked = (len(gc.get_objects()) - before) / 200
            workers = waiting({bare, batch})
            ours = statistics.median(g._stack_saved for g in workers)
            print(json.dumps({"tracked": tracked, "workers": len(workers),
                              "extra_c_stack": ours - bare._stack_saved,
                              "ok": sum(r.ok for r in batch.get()), "bare": bare.get().status}))
    """, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["ok"] == 200 and report["workers"] == 200, report
    assert report["tracked"] < TRACKED_PER_CALL[http_transport], report
    assert report["extra_c_stack"] < EXTRA_C_STACK_BYTES, report
    print(f"per waiting call: {report['tracked']:.1f} tracked objects, "
          f"{report['extra_c_stack']} B of C stack beyond a bare request")
