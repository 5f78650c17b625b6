"""Memory per in-flight call, by structure: 1,000 agent calls held open at once stay under a
generous bound per call, so a regression (a buffer kept per call, a leak) fails here without
timing anything. The figure itself is bench/memory.py's (about 15-35 KB per call there).
"""

from __future__ import annotations

import json
import os

import pytest

from .conftest import run_python

BOUND_KB = 64  # generous: twice the worst measured before issue #22 (34.5 KB, urllib3)


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="reads Linux's VmHWM")
@pytest.mark.usefixtures("http_transport")
def test_a_thousand_calls_in_flight_stay_under_the_bound() -> None:
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
    assert report["per_call_kb"] < BOUND_KB, report
    print(f"memory per in-flight call: {report['per_call_kb']:.1f} KB")  # -s shows it
