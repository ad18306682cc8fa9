"""The HTTP load generator used when ``wrk`` is not installed: C connections in one asyncio
process (httpx, one shared pool, uvloop), each sending its next request when the last one
answered, for a fixed time. Prints one JSON line like the wrk script's.

    python -m benchmarks.loader --url http://127.0.0.1:8000/schedulers/boefje/pop?limit=1 \
        --body-file filter.json --connections 50 --seconds 10 [--push-template file]

``--push-template``: a JSON body with the text ``@N@`` replaced by a request counter (so each
push is a new task).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid


async def load(url: str, body: bytes, template: str | None, connections: int, seconds: float, max_requests: int) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    latencies: list[int] = []
    counts = {"requests": 0, "non2xx": 0, "errors": 0}
    run = uuid.uuid4().hex[:8]
    serial = 0
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        deadline = time.monotonic() + seconds

        async def one_connection() -> None:
            nonlocal serial
            while time.monotonic() < deadline and counts["requests"] < max_requests:
                serial += 1
                content = template.replace("@N@", f"{run}-{serial}").encode() if template else body
                t = time.perf_counter_ns()
                try:
                    response = await client.post(url, content=content, headers=headers)
                except httpx.HTTPError:
                    counts["errors"] += 1
                    continue
                latencies.append(time.perf_counter_ns() - t)
                counts["requests"] += 1
                if not 200 <= response.status_code < 300:
                    counts["non2xx"] += 1

        t0 = time.monotonic()
        await asyncio.gather(*(one_connection() for _ in range(connections)))
        elapsed = time.monotonic() - t0
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] / 1000 if latencies else float("nan")

    return {**counts, "duration_s": elapsed, "p50_us": pct(50), "p90_us": pct(90), "p99_us": pct(99),
            "max_us": latencies[-1] / 1000 if latencies else float("nan"), "loader": "httpx"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--body-file")
    parser.add_argument("--push-template")
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    args = parser.parse_args()
    body = open(args.body_file, "rb").read() if args.body_file else b""
    template = open(args.push_template).read() if args.push_template else None
    try:
        import uvloop

        result = uvloop.run(load(args.url, body, template, args.connections, args.seconds, args.max_requests))
    except ImportError:
        result = asyncio.run(load(args.url, body, template, args.connections, args.seconds, args.max_requests))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
