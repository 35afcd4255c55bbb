// The tabgrid browser worker: a module Web Worker created by the contribute page when the
// visitor presses Start. It owns the websocket, the blob cache and Pyodide; the page owns
// consent and the controls, and tells this worker what the visitor chose. Two channels:
// postMessage with the page (page-messages.js defines those messages) and the websocket with
// the coordinator (connection.js; its messages are defined in server/tabgrid/protocol.py).
//
// Flow control: at most one unit is asked for at a time (one `ready 1`), so Pause stops
// leasing within one unit, and the usage cap is a rest after each unit in proportion to
// the time it took. A result sent is out of flight, but kept until the coordinator
// acknowledges it (unacked.js) and sent again after a reconnect.

/* global KERNELS */
import { JobAbout } from './about.js';
import { BlobError, BlobStore, workerAuth } from './blobs.js';
import { BusyMeter } from './busy.js';
import { Connection } from './connection.js';
import {
  adapterMessage,
  figuresMessage,
  identityMessage,
  logMessage,
  PauseReason,
  stateMessage,
  tileMessage,
  ToWorker,
  workMessage,
} from './page-messages.js';
import { errorItem, outputsItem } from './results.js';
import { loadRuntime } from './runtime.js';
import { inMessages, MAX_RESULTS, maxResults, Unacked } from './unacked.js';

const PROTOCOL = 1;
const FIGURES_EVERY_MS = 1000;
const MAX_JOBS = 256; // job descriptions kept, as the native worker

const post = (msg, transfer = []) => self.postMessage(msg, transfer);
const log = (level, text) => post(logMessage(level, text));

class VolunteerWorker {
  constructor(config) {
    this.config = config;
    this.identity = { workerId: config.workerId ?? null, secret: config.secret ?? null };
    this.duty = clampDuty(config.duty ?? 1);
    this.pauses = new Set(config.paused ? [PauseReason.HIDDEN] : []);
    this.blobs = new BlobStore(new URL(config.wsURL.replace(/^ws/, 'http')).origin, () => this.identity);
    this.about = new JobAbout(this.blobs, () => workerAuth(this.identity));
    this.jobs = new Map();
    this.queue = [];
    this.credit = 0;
    this.running = null;
    this.finished = [];
    this.unacked = new Unacked(); // sent, waiting for an ack
    this.restUntil = 0;
    this.restTimer = null;
    this.stopped = false;
    this.runtime = null;
    this.runtimeReady = false;
    this.adapter = null;
    this.idleReason = '';
    this.reconnectAt = 0;
    this.busy = new BusyMeter();
    this.startedAt = performance.now();
    this.counts = { done: 0, valid: 0, invalid: 0, errors: 0, pending: 0, credit: 0 };
    this.firstResultMs = null;
    this.current = { job: null, kernel: null };
    this.wakeUp = null;
    this.lastState = '';
  }

  async start() {
    this.setState('loading', 'Checking the GPU…');
    this.adapter = await adapterInfo();
    if (!this.adapter) {
      this.setState('error', 'This browser offers no WebGPU adapter, so there is nothing to compute on.');
      return;
    }
    post(adapterMessage(this.adapter));
    this.setState('loading', 'Loading Python (the first visit downloads about 10 MB)…');
    // Pyodide loads while the websocket connects and the first unit's inputs download.
    this.runtime = loadRuntime(this.config).then(
      (runtime) => {
        this.runtimeReady = true;
        this.report();
        return runtime;
      },
      (error) => {
        this.fail(`Python failed to load: ${error?.message ?? error}`);
        throw error;
      },
    );
    this.runtime.catch(() => {});
    this.conn = new Connection(this.config.wsURL, () => this.hello(), {
      welcome: (msg) => this.welcomed(msg),
      message: (msg) => this.receive(msg),
      closed: (reason, delay) => this.disconnected(reason, delay),
    });
    this.conn.connect();
    this.figuresTimer = setInterval(() => this.postFigures(), FIGURES_EVERY_MS);
    this.loop();
  }

  hello() {
    return {
      type: 'hello',
      kind: 'browser',
      protocol: PROTOCOL,
      worker_id: this.identity.workerId,
      secret: this.identity.secret,
      name: this.config.name || 'browser',
      adapter: this.adapter,
      kernels: KERNELS,
      acks: true,
    };
  }

  welcomed(msg) {
    if (msg.worker_id !== this.identity.workerId) {
      // A new identity: results computed under the old one would be judged as strangers'.
      this.finished = this.finished.filter((f) => f.workerId === msg.worker_id);
      const n = this.unacked.size;
      if (n) log('warn', `dropped ${n} unacknowledged results of the old identity`);
      this.unacked.clear();
    }
    this.identity = { workerId: msg.worker_id, secret: msg.secret };
    // A coordinator that leases more than the default keeps as many results unacknowledged;
    // those kept from one that leased more still wait for their acknowledgement here.
    this.unacked.maxResults = Math.max(MAX_RESULTS, maxResults(msg), this.unacked.size);
    post(identityMessage(this.identity));
    this.credit = 0;
    log('info', `connected as worker ${msg.worker_id.slice(0, 8)}`);
    this.resend(msg);
    this.flush();
    this.wake();
  }

  disconnected(reason, delay) {
    // The coordinator releases this connection's leases at once; only a unit already
    // computing is finished, and its result goes out after reconnecting.
    this.queue = [];
    this.credit = 0;
    this.reconnectAt = performance.now() + delay;
    log('warn', `disconnected: ${reason}; reconnecting in ${(delay / 1000).toFixed(1)} s`);
    this.report();
  }

  // A websocket message from the coordinator (protocol.py's tags, not page-messages.js).
  receive(msg) {
    switch (msg.type) {
      case 'job':
        // By the description's key, never the job id alone: an id may name another job later.
        this.jobs.delete(specKey(msg.key, msg.job));
        this.jobs.set(specKey(msg.key, msg.job), msg);
        // Oldest first (a Map keeps insertion order), as the native worker bounds its cache.
        while (this.jobs.size > MAX_JOBS) this.jobs.delete(this.jobs.keys().next().value);
        break;
      case 'lease':
        this.credit = Math.max(0, this.credit - msg.leases.length);
        this.queue.push(...msg.leases);
        this.idleReason = '';
        break;
      case 'cancel': {
        const dropped = new Set(msg.leases);
        // The unit computing now finishes (a GPU dispatch cannot be stopped), and its result
        // is dropped: the coordinator no longer wants it.
        if (this.running && dropped.has(this.running.lease)) this.running.calledBack = true;
        this.queue = this.queue.filter((l) => !dropped.has(l.lease));
        this.finished = this.finished.filter((f) => !dropped.has(f.item.lease));
        this.unacked.forget(dropped);
        break;
      }
      case 'ack':
        this.unacked.forget(msg.leases);
        break;
      case 'idle':
        this.idleReason = msg.reason;
        break;
      case 'stats':
        Object.assign(this.counts, {
          valid: msg.valid,
          invalid: msg.invalid,
          errors: msg.errors,
          pending: msg.pending,
          credit: msg.credit,
        });
        this.postFigures();
        break;
      case 'error':
        log('warn', `coordinator: ${msg.code}: ${msg.message}`);
        break;
      case 'bye':
        log('warn', `coordinator said bye: ${msg.reason}`);
        if (msg.code === 'banned') {
          // Reconnecting cannot help; the volunteer is told why.
          this.fail(`The coordinator's operator banned this worker: ${msg.reason}`);
        }
        break;
      default:
        break;
    }
    this.wake();
  }

  // ---- the compute loop -------------------------------------------------------------------

  wake() {
    const resolve = this.wakeUp;
    this.wakeUp = null;
    resolve?.();
  }

  async loop() {
    while (!this.stopped) {
      const lease = this.queue.shift();
      if (lease) {
        await this.compute(lease);
        this.rest();
        continue;
      }
      this.topUp();
      this.report();
      await new Promise((resolve) => {
        this.wakeUp = resolve;
      });
    }
  }

  topUp() {
    if (this.pauses.size || this.credit > 0 || !this.conn?.open) return;
    if (performance.now() < this.restUntil) return;
    this.credit = 1;
    this.conn.send({ type: 'ready', n: 1 });
  }

  rest() {
    const last = this.lastBusyMs ?? 0;
    if (this.duty >= 1 || last <= 0) return;
    const ms = last * (1 / this.duty - 1);
    this.restUntil = performance.now() + ms;
    clearTimeout(this.restTimer);
    this.restTimer = setTimeout(() => this.wake(), ms);
  }

  async compute(lease) {
    this.running = lease;
    const spec = this.jobs.get(specKey(lease.spec, lease.job));
    this.current = { job: lease.job, kernel: spec?.kernel ?? null };
    this.report();
    let item;
    this.lastBusyMs = 0;
    try {
      if (!spec) throw new Error(`no job description for job ${lease.job} arrived before its lease`);
      const params = { ...spec.params, ...lease.params };
      post(workMessage(await this.about.describe(lease, spec)));
      const inputs = await this.inputs({ ...spec.inputs, ...lease.inputs });
      const runtime = await this.runtime;
      const t0 = performance.now();
      const result = await runtime.run(spec.kernel, params, inputs);
      const t1 = performance.now();
      this.busy.add(t0, t1);
      this.lastBusyMs = t1 - t0;
      if (result.error !== undefined) {
        item = errorItem(lease.lease, result.error, result.ms, result.kind ?? '');
        log('warn', `unit ${lease.unit} of job ${lease.job} failed: ${result.error.split('\n')[0]}`);
      } else {
        item = await outputsItem(lease.lease, result.outputs, result.ms, this.uploadContext());
        if (spec.kernel === 'mandelbrot') this.showTile(lease, params, result.outputs);
      }
    } catch (error) {
      if (this.stopped) return;
      const text = error instanceof BlobError ? error.message : `${error?.name ?? 'Error'}: ${error?.message ?? error}`;
      item = errorItem(lease.lease, text);
      log('warn', `unit ${lease.unit} of job ${lease.job}: ${text}`);
    } finally {
      this.running = null;
    }
    if (lease.calledBack) {
      log('info', `unit ${lease.unit} of job ${lease.job} was called back: its result is dropped`);
      return;
    }
    this.counts.done += 1;
    this.finished.push({ workerId: this.identity.workerId, item });
    this.flush();
    this.postFigures();
  }

  async inputs(refs) {
    return Promise.all(
      Object.entries(refs).map(async ([name, ref]) => ({
        name,
        dtype: ref.dtype,
        shape: ref.shape,
        digest: ref.digest, // verified by BlobStore: the runtime keys resident GPU buffers by it
        data: await this.blobs.get(ref),
      })),
    );
  }

  uploadContext() {
    const { workerId, secret } = this.identity;
    return {
      blobs: this.blobs,
      welcome: this.conn.welcome ?? { max_inline: 0 },
      auth: `Worker ${workerId}:${secret}`,
    };
  }

  flush() {
    if (!this.conn?.open || !this.finished.length) return;
    const { welcome } = this.conn;
    const current = this.finished.filter((f) => f.workerId === this.identity.workerId);
    // Within the coordinator's count: results of leases from one that leased more (before a
    // reconnect) would otherwise go in a message it refuses.
    const { messages } = inMessages(
      current.map((f) => f.item),
      Infinity,
      maxResults(welcome),
    );
    const sent = new Set();
    for (const items of messages) {
      if (!this.conn.send({ type: 'result', results: items })) break;
      for (const item of items) sent.add(item.lease);
      if (welcome.acks) this.keep(items);
      if (this.firstResultMs === null) this.firstResultMs = performance.now() - this.startedAt;
    }
    if (sent.size) this.finished = current.filter((f) => !sent.has(f.item.lease));
  }

  keep(items) {
    const dropped = this.unacked.add(items);
    if (dropped.length) {
      const why = 'if the coordinator lost them, their units are computed again';
      log('warn', `dropped ${dropped.length} unacknowledged results, the oldest: ${why}`);
    }
  }

  // Results sent on an earlier connection that no ack named: the coordinator may have died
  // before recording them. One it recorded already is acknowledged and ignored.
  resend(welcome) {
    if (!this.unacked.size) return;
    const { messages, tooBig } = inMessages(
      this.unacked.items(),
      welcome.max_message,
      maxResults(welcome),
    );
    if (tooBig.length) {
      this.unacked.forget(tooBig);
      log('warn', `dropped ${tooBig.length} unacknowledged results too large for a message`);
    }
    log('info', `sending ${this.unacked.size} unacknowledged results again`);
    for (const results of messages) this.conn.send({ type: 'result', results });
    if (!welcome.acks) this.unacked.clear(); // a coordinator that sends no ack
  }

  showTile(lease, params, outputs) {
    const iters = outputs.find((o) => o.name === 'iters');
    if (!iters) return;
    const copy = new Uint32Array(iters.data.slice().buffer);
    const { width, height, max_iter: maxIter, x0, y0, x1, y1 } = params;
    const tile = { width, height, maxIter, iters: copy, x0, y0, x1, y1, job: lease.job, unit: lease.unit };
    post(tileMessage(tile), [copy.buffer]);
  }

  // ---- controls from the page --------------------------------------------------------------

  pause(reason) {
    this.pauses.add(reason);
    // A unit asked for but not yet leased would arrive while paused: hand the ask back.
    if (this.credit > 0 && this.conn?.send({ type: 'hold' })) this.credit = 0;
    this.report();
  }

  resume(reason) {
    this.pauses.delete(reason);
    this.wake();
    this.report();
  }

  setDuty(duty) {
    this.duty = clampDuty(duty);
    if (this.duty >= 1) this.restUntil = 0;
    this.wake();
  }

  stop() {
    this.stopped = true;
    clearInterval(this.figuresTimer);
    clearTimeout(this.restTimer);
    this.conn?.stop('the visitor stopped contributing');
    this.setState('stopped', 'Stopped.');
    this.wake();
  }

  fail(text) {
    log('error', text);
    this.stopped = true;
    this.conn?.stop(text.slice(0, 100));
    this.setState('error', text);
  }

  async loseDevice() {
    await (await this.runtime).loseDevice();
    log('warn', 'the GPU device was lost; the next unit requests a new one');
  }

  // ---- reporting --------------------------------------------------------------------------

  report() {
    if (this.stopped) return;
    if (this.running) {
      const job = this.current.job;
      const kernel = this.current.kernel ?? '?';
      this.setState('running', `Computing a unit of job ${job} (kernel ${kernel}).`);
    } else if (!this.runtimeReady) {
      this.setState('loading', 'Loading Python and the tabgrid runtime…');
    } else if (!this.conn?.open) {
      const wait = Math.max(0, this.reconnectAt - performance.now());
      const detail = this.reconnectAt ? `Reconnecting in ${Math.ceil(wait / 1000)} s…` : 'Connecting…';
      this.setState(this.reconnectAt ? 'reconnecting' : 'connecting', detail);
    } else if (this.pauses.size) {
      const why = this.pauses.has(PauseReason.USER) ? 'Paused.' : 'Paused while the tab is hidden.';
      this.setState('paused', why);
    } else if (this.queue.length) {
      this.setState('running', 'Starting the next unit…');
    } else {
      this.setState('waiting', this.idleReason ? `Waiting for work: ${this.idleReason}` : 'Waiting for work…');
    }
  }

  setState(state, detail) {
    const key = `${state}\0${detail}`;
    if (key === this.lastState) return;
    this.lastState = key;
    post(stateMessage(state, detail));
  }

  postFigures() {
    if (this.stopped) return;
    post(
      figuresMessage({
        ...this.counts,
        job: this.current.job,
        kernel: this.current.kernel,
        busy: this.busy.fraction(),
        firstResultMs: this.firstResultMs,
      }),
    );
    this.report();
  }
}

function specKey(key, job) {
  return key || `job ${job}`;
}

function clampDuty(duty) {
  const value = Number(duty);
  return Number.isFinite(value) ? Math.min(1, Math.max(0.1, value)) : 1;
}

async function adapterInfo() {
  if (!self.navigator.gpu) return null;
  const adapter = await self.navigator.gpu.requestAdapter();
  if (!adapter) return null;
  const info = adapter.info ?? {};
  return { vendor: info.vendor ?? '', architecture: info.architecture ?? '', description: info.description ?? '' };
}

let worker = null;

// A message from the page (page-messages.js).
self.onmessage = (event) => {
  const msg = event.data ?? {};
  if (msg.type === ToWorker.START) {
    if (worker) return;
    worker = new VolunteerWorker(msg.config ?? {});
    worker.start().catch((error) => worker.fail(`the worker failed to start: ${error?.message ?? error}`));
    return;
  }
  if (!worker) return;
  switch (msg.type) {
    case ToWorker.PAUSE:
      worker.pause(msg.reason ?? PauseReason.USER);
      break;
    case ToWorker.RESUME:
      worker.resume(msg.reason ?? PauseReason.USER);
      break;
    case ToWorker.CAP:
      worker.setDuty(msg.duty);
      break;
    case ToWorker.STOP:
      worker.stop();
      break;
    case ToWorker.LOSE_DEVICE:
      worker.loseDevice().catch(() => {});
      break;
    default:
      break;
  }
};
