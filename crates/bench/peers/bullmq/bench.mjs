// Laneway's driver for BullMQ (issue 5, `cargo xtask bench-peers`).
//
// xtask installs the pinned bullmq into target/peers/bullmq and copies this file next to its
// node_modules. One mode per process; it prints `ready` (a worker that has started and gone
// idle) and ends with one `result {json}` line (or `error <why>`), which `laneway-bench peers`
// parses.
//
//   node bench.mjs REDIS_URL version
//   node bench.mjs REDIS_URL produce-single N CAP_S
//   node bench.mjs REDIS_URL produce-concurrent N PRODUCERS CAP_S
//   node bench.mjs REDIS_URL produce-batch N BATCH CAP_S
//   node bench.mjs REDIS_URL fill N
//   node bench.mjs REDIS_URL latency N RATE
//   node bench.mjs REDIS_URL work EXPECT CONCURRENCY CAP_S
//
// BullMQ is used with its defaults: one `Queue` (one ioredis connection) shared by every
// producer of the process, `add` per job or `addBulk` per batch, and one `Worker` with
// `concurrency` set, which blocks on Redis for new jobs (no polling). Completed jobs are kept,
// as by default. Times: `process.hrtime` (CLOCK_MONOTONIC, the same clock in every process of
// the machine), so the producer's `t` (µs) can be subtracted in the worker.

import { readFileSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';

const QUEUE = 'bench';
const [url, mode, ...args] = process.argv.slice(2);
// In native ESM, BullMQ 6 wants a client instance rather than connection options; ioredis is
// its optional peer dependency, pinned next to it.
const connect = () => new Redis(url, { maxRetriesPerRequest: null });

const nowNs = () => process.hrtime.bigint();
const nowUs = () => Number(nowNs() / 1000n);
const secsSince = (fromNs) => Number(nowNs() - fromNs) / 1e9;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const num = (i, what) => {
  const v = Number(args[i]);
  if (args[i] === undefined || Number.isNaN(v)) throw new Error(`missing or bad ${what}`);
  return v;
};

// Synchronous, so that `process.exit` right after cannot lose it.
const say = (line) => writeSync(1, `${line}\n`);
const emit = (value) => say(`result ${JSON.stringify(value)}`);

function vmHwmKib() {
  const m = /^VmHWM:\s+(\d+)/m.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) : 0;
}

async function produce(n, producers, batch, capS) {
  const queue = new Queue(QUEUE, { connection: connect() });
  await queue.waitUntilReady();
  const step = batch ?? 1;
  let next = 0;
  let done = 0;
  const started = nowNs();
  const deadline = started + BigInt(Math.round(capS * 1e9));
  const producer = async () => {
    while (nowNs() < deadline) {
      const from = next;
      if (from >= n) return;
      const to = Math.min(from + step, n);
      next = to;
      if (batch === undefined) {
        await queue.add('noop', { i: from });
      } else {
        const jobs = [];
        for (let i = from; i < to; i++) jobs.push({ name: 'noop', data: { i } });
        await queue.addBulk(jobs);
      }
      done += to - from;
    }
  };
  await Promise.all(Array.from({ length: producers }, producer));
  emit({ jobs: done, elapsed_s: secsSince(started) });
}

async function paced(n, rate) {
  const queue = new Queue(QUEUE, { connection: connect() });
  await queue.waitUntilReady();
  const periodNs = 1e9 / rate;
  const started = nowNs();
  for (let i = 0; i < n; i++) {
    const waitMs = (Number(started) + i * periodNs - Number(nowNs())) / 1e6;
    if (waitMs > 0) await sleep(waitMs);
    await queue.add('noop', { i, t: nowUs() });
  }
  emit({ jobs: n, elapsed_s: secsSince(started) });
}

async function work(expect, concurrency, capS) {
  let first = null;
  let completed = 0;
  const latencies = [];
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    emit({
      completed,
      elapsed_s: first === null ? 0 : secsSince(first),
      vm_hwm_kib: vmHwmKib(),
      latencies_us: latencies,
    });
    process.exit(0);
  };
  const worker = new Worker(
    QUEUE,
    async (job) => {
      const start = nowNs();
      if (first === null) first = start;
      if (job.data.t !== undefined) latencies.push(Number(start / 1000n) - job.data.t);
    },
    { connection: connect(), concurrency },
  );
  worker.on('completed', () => {
    completed += 1;
    if (completed >= expect) finish();
  });
  worker.on('failed', (job, err) => {
    process.stderr.write(`bullmq driver: job ${job?.id} failed: ${err}\n`);
  });
  worker.on('error', (err) => process.stderr.write(`bullmq driver: worker error: ${err}\n`));
  setInterval(() => {
    if (first !== null && secsSince(first) >= capS) finish();
  }, 5);
  await worker.waitUntilReady();
  await sleep(200);
  say('ready');
}

function version() {
  const require = createRequire(import.meta.url);
  const pkg = require('bullmq/package.json');
  const ioredis = require('ioredis/package.json');
  emit({
    peer: 'bullmq',
    version: pkg.version,
    runtime: `Node ${process.version}, ioredis ${ioredis.version}`,
  });
}

try {
  switch (mode) {
    case 'version':
      version();
      break;
    case 'produce-single':
      await produce(num(0, 'N'), 1, undefined, num(1, 'CAP_S'));
      break;
    case 'produce-concurrent':
      await produce(num(0, 'N'), num(1, 'PRODUCERS'), undefined, num(2, 'CAP_S'));
      break;
    case 'produce-batch':
      await produce(num(0, 'N'), 1, num(1, 'BATCH'), num(2, 'CAP_S'));
      break;
    case 'fill':
      await produce(num(0, 'N'), 1, 1000, 3600);
      break;
    case 'latency':
      await paced(num(0, 'N'), num(1, 'RATE'));
      break;
    case 'work':
      await work(num(0, 'EXPECT'), num(1, 'CONCURRENCY'), num(2, 'CAP_S'));
      break;
    default:
      throw new Error(`unknown mode ${JSON.stringify(mode)}`);
  }
} catch (err) {
  // The runner reads why from this line.
  say(`error ${String(err?.message ?? err).replaceAll('\n', ' ')}`);
  process.exit(1);
}
// The producers' ioredis clients are the caller's to close, and a worker runs until `finish`.
if (mode !== 'work') process.exit(0);
