// The messages between the contribute page (web/contribute/page.js) and this Web Worker
// (worker.js), sent with postMessage. Both sides import the type names and the constructors
// from here, so each name is written once. A message is a plain object with a `type`; a side
// ignores a type it does not know (a newer worker may say more than an older page knows).
//
// Not the websocket protocol: the Web Worker and the coordinator speak another channel
// (hello, welcome, job, lease, ready, hold, result, cancel, idle, stats, error, bye), JSON
// frames whose lower-case `type` tags are defined in server/tabgrid/protocol.py and used only
// in worker.js and connection.js. No type here is also a protocol tag (tests/test_web.py
// checks), so each name means one thing: the worker's `figures` for the page are not the
// coordinator's `stats`, though they include them. (e2e/harness's Web Worker is a third,
// test-only channel of {id, cmd} requests.)

/** Types of the messages the page posts to the Web Worker. */
export const ToWorker = Object.freeze({
  START: 'start',
  PAUSE: 'pause',
  RESUME: 'resume',
  CAP: 'cap',
  STOP: 'stop',
  LOSE_DEVICE: 'lose-device',
});

/** Types of the messages the Web Worker posts to the page. */
export const ToPage = Object.freeze({
  STATE: 'state',
  ADAPTER: 'adapter',
  IDENTITY: 'identity',
  FIGURES: 'figures',
  TILE: 'tile',
  WORK: 'work',
  LOG: 'log',
});

/** Why the page wants the worker paused: it resumes only once no reason is left. */
export const PauseReason = Object.freeze({ USER: 'user', HIDDEN: 'hidden' });

// ---- page -> Web Worker ---------------------------------------------------------------------

/**
 * The first message, once, right after the page creates the worker (Start pressed, or a
 * remembered consent). config: {indexURL, lockFileURL} (Pyodide and its lock file), wsURL
 * (the worker websocket), workerId and secret (a remembered identity, or null), name (a
 * short browser name for the worker list), duty (the usage cap, 0.1 to 1), paused (true:
 * start paused for PauseReason.HIDDEN).
 */
export const startMessage = (config) => ({ type: ToWorker.START, config });

/** Stop asking for units until a resume with the same reason (a PauseReason value). */
export const pauseMessage = (reason) => ({ type: ToWorker.PAUSE, reason });

/** Withdraw one pause reason; leasing goes on once none is left. */
export const resumeMessage = (reason) => ({ type: ToWorker.RESUME, reason });

/** The usage cap moved: duty is the fraction of time to compute, 0.1 to 1. */
export const capMessage = (duty) => ({ type: ToWorker.CAP, duty });

/** The visitor pressed Stop: say bye to the coordinator and stop for good. */
export const stopMessage = () => ({ type: ToWorker.STOP });

/**
 * Destroy the GPU device, as a driver reset would (the next unit requests a new one). No
 * control of the page sends it: e2e/test_resilience.py posts {type: 'lose-device'} itself.
 */
export const loseDeviceMessage = () => ({ type: ToWorker.LOSE_DEVICE });

// ---- Web Worker -> page ---------------------------------------------------------------------

/**
 * What the worker is doing, whenever that or its detail changes. state: loading, connecting,
 * waiting, running, paused, reconnecting, stopped or error (the page adds its own idle and
 * standby); detail: a sentence for the visitor.
 */
export const stateMessage = (state, detail) => ({ type: ToPage.STATE, state, detail });

/** The WebGPU adapter the worker computes on, as the coordinator is told it in hello. */
export const adapterMessage = ({ vendor, architecture, description }) => ({
  type: ToPage.ADAPTER,
  vendor,
  architecture,
  description,
});

/** The coordinator's welcome gave this worker id and secret: the page remembers them. */
export const identityMessage = ({ workerId, secret }) => ({
  type: ToPage.IDENTITY,
  workerId,
  secret,
});

/**
 * The figures the page shows, about once a second and after each unit: done (units computed
 * since Start), valid, invalid, errors, pending and credit (the coordinator's standing of
 * this worker, from its protocol `stats`), job and kernel (of the unit now computing, or
 * null), busy (the fraction of the last minute spent computing) and firstResultMs (from
 * Start to the first result sent, or null).
 */
export const figuresMessage = ({ done, valid, invalid, errors, pending, credit, job, kernel, busy, firstResultMs }) => ({
  type: ToPage.FIGURES,
  done,
  valid,
  invalid,
  errors,
  pending,
  credit,
  job,
  kernel,
  busy,
  firstResultMs,
});

/**
 * A mandelbrot tile just computed, for the page to draw: width and height in pixels, maxIter,
 * iters (a Uint32Array of escape counts, row 0 first; its buffer is transferred), the
 * region x0, y0, x1, y1, and its job and unit.
 */
export const tileMessage = ({ width, height, maxIter, iters, x0, y0, x1, y1, job, unit }) => ({
  type: ToPage.TILE,
  width,
  height,
  maxIter,
  iters,
  x0,
  y0,
  x1,
  y1,
  job,
  unit,
});

/**
 * What the unit about to run computes, sent before its inputs download: job and kernel; for
 * an embedding job model, name (the job's), owner (who submitted it) and texts, else those
 * are undefined; fetchBytes (its inputs not yet in this browser's cache, to download now) and
 * totalBytes (all its inputs).
 */
export const workMessage = ({ job, kernel, model, name, owner, texts, fetchBytes, totalBytes }) => ({
  type: ToPage.WORK,
  job,
  kernel,
  model,
  name,
  owner,
  texts,
  fetchBytes,
  totalBytes,
});

/** A line for the page's log: level is info, warn or error. */
export const logMessage = (level, text) => ({ type: ToPage.LOG, level, text });
