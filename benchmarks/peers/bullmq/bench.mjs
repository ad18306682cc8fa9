// The BullMQ side of redisched's end-to-end benchmark: add N jobs (addBulk, 1000 at a time),
// then a Worker with concurrency C takes each and completes it (a no-op processor). Prints one
// JSON line: {"n", "concurrency", "add_s", "process_s", "jobs_per_s", "steady_jobs_per_s"};
// the steady rate counts from the first job completed to the last, so the worker's start
// (its connections, Node's warm-up) is left out, as redisched's side leaves out its own.
//
//   node bench.mjs --redis redis://127.0.0.1:6379 --n 20000 --concurrency 10 [--priority]
//
// Bounded: gives up after --timeout seconds (default 120).
import { Queue, Worker } from "bullmq";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith("--")) pairs.push([arg.slice(2), all[i + 1] && !all[i + 1].startsWith("--") ? all[i + 1] : true]);
    return pairs;
  }, []),
);
const url = new URL(args.redis ?? "redis://127.0.0.1:6379");
const connection = { host: url.hostname, port: Number(url.port || 6379), maxRetriesPerRequest: null };
const n = Number(args.n ?? 10000);
const concurrency = Number(args.concurrency ?? 10);
const usePriority = Boolean(args.priority);
const timeoutMs = Number(args.timeout ?? 120) * 1000;
const name = `bench-${process.pid}-${Date.now()}`;

function payload(i) {
  // The same shape as a redisched boefje task's data.
  const b = i % 20;
  return {
    id: crypto.randomUUID(),
    boefje: { id: `boefje-${String(b).padStart(2, "0")}`, name: `boefje-${b}`, version: null,
              oci_image: `ghcr.io/minvws/openkat/plugin-${b % 4}:latest` },
    input_ooi: `Hostname|internet|h${i}.example.com`,
    organization: `org${Math.floor(i / 20) % 10}`,
    deduplication_key: null,
    dispatches: [],
  };
}

const queue = new Queue(name, { connection });
await queue.waitUntilReady();
const jobs = Array.from({ length: n }, (_, i) => ({
  name: "boefje",
  data: payload(i),
  opts: usePriority ? { priority: 1 + Math.floor(Math.random() * 2_000_000) } : {},
}));

const t0 = performance.now();
for (let start = 0; start < n; start += 1000) {
  await queue.addBulk(jobs.slice(start, start + 1000));
}
const t1 = performance.now();

let done = 0;
let firstDone = null;
let finish;
const finished = new Promise((resolve) => (finish = resolve));
const worker = new Worker(name, async () => ({ ok: true }), { connection, concurrency, autorun: false });
worker.on("completed", () => {
  done += 1;
  if (firstDone === null) firstDone = performance.now();
  if (done >= n) finish(true);
});
worker.on("failed", (_job, err) => console.error("job failed", err?.message));
const t2 = performance.now();
worker.run();
const ok = await Promise.race([finished, new Promise((r) => setTimeout(() => r(false), timeoutMs))]);
const t3 = performance.now();
await worker.close();
await queue.obliterate({ force: true }).catch(() => {});
await queue.close();

console.log(JSON.stringify({
  n, concurrency, priority: usePriority, completed: done, timed_out: !ok, bullmq: (await import("bullmq/package.json", { with: { type: "json" } }).catch(() => ({ default: {} }))).default.version ?? null,
  add_s: (t1 - t0) / 1000, process_s: (t3 - t2) / 1000, jobs_per_s: done / ((t3 - t2) / 1000),
  steady_jobs_per_s: firstDone !== null && done > 1 ? (done - 1) / ((t3 - firstDone) / 1000) : null,
  total_jobs_per_s: done / ((t3 - t0) / 1000),
}));
process.exit(ok ? 0 : 1);
