"""Load: a child-process simulator serving 2,000 concurrent keep-alive clients.

The client is a monkey-patched subprocess (one greenlet and one connection per client, two calls
each over the same connection). Assertions are structural — every call answered, the concurrency
visible in the stats, well under the time budget — not tight timings.
"""

from __future__ import annotations

import json

from greenagents.testing import Simulator
from tests.conftest import run_python

CLIENTS = 2_000
CALLS_PER_CLIENT = 2
LATENCY_S = 1.0

CLIENT = """
from gevent import monkey
monkey.patch_all()
import http.client, json, resource, time
import gevent

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

def client(i):
    conn = http.client.HTTPConnection("127.0.0.1", {port}, timeout=30)
    body = json.dumps({{"model": "m", "messages": [{{"role": "user", "content": f"load {{i}}"}}]}})
    statuses = []
    for _ in range({calls}):
        conn.request("POST", "/v1/chat/completions", body, {{"Content-Type": "application/json"}})
        reply = conn.getresponse()
        json.loads(reply.read())
        statuses.append(reply.status)
    conn.close()
    return statuses

started = time.monotonic()
jobs = [gevent.spawn(client, i) for i in range({clients})]
gevent.joinall(jobs)
print(json.dumps({{
    "elapsed": time.monotonic() - started,
    "ok": sum(job.value.count(200) for job in jobs if job.successful()),
    "errors": [repr(job.exception) for job in jobs if not job.successful()][:5],
}}))
"""


def test_two_thousand_concurrent_keep_alive_clients() -> None:
    with Simulator(latency=LATENCY_S).start_process() as sim:
        port = sim.url.rsplit(":", 1)[1]
        code = CLIENT.format(port=port, calls=CALLS_PER_CLIENT, clients=CLIENTS)
        result = run_python(code, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        report = json.loads(result.stdout)
        stats = sim.stats()
    assert report["errors"] == [] and report["ok"] == CLIENTS * CALLS_PER_CLIENT
    assert stats["requests"] == CLIENTS * CALLS_PER_CLIENT and stats["by_status"] == {
        "200": CLIENTS * CALLS_PER_CLIENT}
    assert stats["peak_in_flight"] >= CLIENTS // 2  # they really overlapped
    assert report["elapsed"] < 60  # serial would be 4,000 s
    print(f"{CLIENTS} clients x {CALLS_PER_CLIENT} calls of {LATENCY_S}s: "
          f"{report['elapsed']:.1f}s, peak in flight {stats['peak_in_flight']}")
