"""``python -m benchmarks [names...] [--quick]`` (or ``redisched bench ...``): run the benchmarks, print a summary table,
write ``benchmarks/results/<timestamp>.json``.

Each benchmark starts what it needs on 127.0.0.1 (a private redis-server, API processes,
a private Postgres database) and stops it after. Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import textwrap
import time
import traceback
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.common import Context, Row, fmt, machine, progress

# name -> (module, what it measures). Run in this order.
REGISTRY: dict[str, tuple[str, str]] = {
    "pop_latency": ("benchmarks.bench_pop_latency", "direct-client single pop with runner filters at 1k/100k/1M queued"),
    "throughput": ("benchmarks.bench_throughput", "direct-client batched push and batched pop, tasks/s"),
    "e2e": ("benchmarks.bench_e2e", "push -> pop -> running -> completed, redisched vs BullMQ on the same Redis"),
    "http": ("benchmarks.bench_http", "HTTP push and pop at 1/10/50 concurrent, 1 and 2 API processes, vs the ceiling"),
    "http_finish": ("benchmarks.bench_http_finish", "HTTP finish and fetch: PATCH then pop against PATCH .../pop_next, 10 runners"),
    "memory": ("benchmarks.bench_memory", "Redis memory per queued boefje task"),
    "snapshot": ("benchmarks.bench_snapshot", "snapshot lag to Postgres at a steady 2,000 pushes/s"),
    "shards": ("benchmarks.bench_shards", "runner pops on a 1/2/3-master Redis Cluster, the queue in 1/2/3 partitions"),
    "otel": ("benchmarks.bench_otel", "HTTP push and pop with OpenTelemetry tracing on (exported over OTLP) against off"),
    "fairness": ("benchmarks.bench_fairness", "fair pop over HTTP: shares of the first 1,000 pops against weights, cost against none"),
    "scripts": ("benchmarks.bench_scripts", "each queue script's Redis µs per op (INFO commandstats, private server)"),
    "callgrind": ("benchmarks.bench_callgrind", "Redis' instructions per task under callgrind: pop_next, OpenKAT's loop, a pop"),
    "ab": ("benchmarks.bench_ab", "this tree against a baseline commit (REDISCHED_BENCH_BASELINE): direct pop, HTTP pop and push"),
    "profile": ("benchmarks.bench_profile", "where the direct-client pop and push time goes (Python vs Redis)"),
}

RESULTS = Path(__file__).resolve().parent / "results"


DESCRIPTION = (
    "Run the benchmarks, print a summary table (value, target, met/MISSED), and write every row and "
    "the raw samples to benchmarks/results/<timestamp>.json. Each starts what it needs on 127.0.0.1 "
    "and stops it after."
)


def main(argv: list[str] | None = None, prog: str = "python -m benchmarks") -> int:
    listing = "\n".join(f"  {name:12} {what}" for name, (_module, what) in REGISTRY.items())
    parser = argparse.ArgumentParser(
        prog=prog, description=textwrap.fill(DESCRIPTION, 90), epilog=f"benchmarks, in the order they run:\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("names", nargs="*", help="benchmarks to run (default all; listed below)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and shorter runs (CI, a first look)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--out", type=Path, help="JSON results file (default benchmarks/results/<timestamp>.json)")
    args = parser.parse_args(argv)
    if args.list:
        for name, (_module, what) in REGISTRY.items():
            print(f"{name:12} {what}")
        return 0
    unknown = [n for n in args.names if n not in REGISTRY]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(REGISTRY)}")
    names = args.names or list(REGISTRY)

    ctx = Context(quick=args.quick)
    started = datetime.now(timezone.utc)
    errors, durations = [], {}
    progress(f"running {', '.join(names)}{' (quick)' if args.quick else ''}; machine {machine()}")
    for index, name in enumerate(names, 1):
        module_name, what = REGISTRY[name]
        ctx.bench = name
        progress(f"=== [{index}/{len(names)}] {name}: {what}")
        t0 = time.monotonic()
        try:
            importlib.import_module(module_name).run(ctx)
        except KeyboardInterrupt:
            ctx.rows.append(Row(name, "(interrupted)", None, "", "", "error"))
            errors.append(name)
            break
        except Exception as exc:  # one benchmark failing must not hide the others' results
            traceback.print_exc()
            ctx.rows.append(Row(name, "(failed)", None, "", "", "error", f"{type(exc).__name__}: {exc}"[:300]))
            errors.append(name)
        durations[name] = round(time.monotonic() - t0, 1)
        progress(f"=== {name} done in {durations[name]} s")

    print_table(ctx)
    out = args.out or RESULTS / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "started": started.isoformat(),
        "quick": args.quick,
        "benchmarks": names,
        "durations_s": durations,
        "machine": machine(),
        "rows": [asdict(row) for row in ctx.rows],
        "notes": ctx.notes,
        "details": ctx.details,
        "errors": errors,
    }
    out.write_text(json.dumps(document, indent=2, default=str))
    print(f"\nresults: {out}")
    return 1 if errors else 0


def print_table(ctx: Context) -> None:
    headers = ("benchmark", "metric", "value", "unit", "target", "status")
    lines = [(r.bench, r.metric, fmt(r.value) if r.status not in ("skipped", "error") else "-", r.unit, r.target,
              r.status + (f" ({r.note})" if r.note and r.status in ("skipped", "error") else "")) for r in ctx.rows]
    widths = [max(len(h), *(len(str(line[i])) for line in lines)) if lines else len(h) for i, h in enumerate(headers)]
    widths[5] = min(widths[5], 60)
    rule = "  ".join("-" * w for w in widths)
    print()
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print(rule)
    for line in lines:
        cells = [str(c).ljust(w) if i != 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(line, widths))]
        print("  ".join(cells).rstrip())
    met = sum(r.status == "met" for r in ctx.rows)
    missed = [r for r in ctx.rows if r.status == "MISSED"]
    print(rule)
    print(f"targets: {met} met, {len(missed)} missed" + (": " + "; ".join(f"{r.bench}/{r.metric}" for r in missed) if missed else ""))
    if ctx.notes:
        print("\nnotes:")
        for note in ctx.notes:
            print(f"  - {note}")


if __name__ == "__main__":
    sys.exit(main())
