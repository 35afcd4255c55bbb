// The contribute page: finds the GPU, asks for consent, and drives the compute Web Worker
// (worker_js/src/worker.js) with the messages that worker_js/src/page-messages.js defines.
// Nothing heavy happens before Start: the Worker (and with it Pyodide) is created only then.

import {
  capMessage,
  PauseReason,
  pauseMessage,
  resumeMessage,
  startMessage,
  stopMessage,
  ToPage,
} from '../../worker_js/src/page-messages.js';
import * as settings from './settings.js';
import { describeGpu, probeGpu } from './gpu.js';
import { describeTile, drawTile } from './tile.js';

const $ = (id) => document.getElementById(id);
const ui = {
  start: $('start'),
  stop: $('stop'),
  pause: $('pause'),
  resume: $('resume'),
  cap: $('cap'),
  capValue: $('cap-value'),
  pauseHidden: $('pause-hidden'),
  gpu: $('gpu'),
  noWebgpu: $('no-webgpu'),
  noWebgpuReason: $('no-webgpu-reason'),
  statusBox: $('status-box'),
  stateLabel: $('state-label'),
  state: $('state'),
  status: $('status'),
  consentNote: $('consent-note'),
  workerId: $('worker-id'),
  done: $('units-done'),
  valid: $('units-valid'),
  invalid: $('units-invalid'),
  pending: $('units-pending'),
  errors: $('units-errors'),
  credit: $('credit'),
  job: $('job'),
  kernel: $('kernel'),
  busy: $('busy'),
  firstResult: $('first-result'),
  work: $('work'),
  tile: $('tile'),
  tileInfo: $('tile-info'),
  log: $('log'),
};

const STATE_LABELS = {
  idle: 'Not started',
  loading: 'Loading',
  connecting: 'Connecting',
  running: 'Computing',
  paused: 'Paused',
  waiting: 'Waiting for work',
  reconnecting: 'Reconnecting',
  error: 'Something went wrong',
  stopped: 'Stopped',
  standby: 'Standing by',
};

// [status line, longer explanation] for each reason the probe can give.
const NO_WEBGPU = {
  insecure: [
    'This browser cannot contribute here: WebGPU needs a secure (https) page.',
    'Browsers only offer WebGPU to secure pages, and this page was opened over plain http ' +
      'from another address. Open it over https, or as http://localhost on the machine that ' +
      'runs the coordinator.',
  ],
  'no-api': [
    'This browser cannot contribute: it does not offer WebGPU.',
    'This browser does not offer WebGPU, or has it turned off.',
  ],
  'no-adapter': [
    'This browser cannot contribute: WebGPU found no GPU to use.',
    'This browser supports WebGPU but did not find a GPU it is willing to use. Hardware ' +
      'acceleration may be off, or the browser may not trust this GPU or its driver yet.',
  ],
  failed: [
    'This browser cannot contribute: looking for a GPU failed.',
    'The browser failed while looking for a GPU',
  ],
};

const STOP_GRACE_MS = 2000; // time the worker gets to say goodbye to the coordinator
// One contributing tab per browser: tabs share one worker identity (localStorage), and two
// replicas of a unit must come from different volunteers. Other tabs stand by for the lock.
const CONTRIBUTOR_LOCK = 'tabgrid-contributor';
const LOG_LINES = 50;

// The page tells the worker to pause for a reason (a PauseReason) and lets it resume only
// once no reason is left, so a tab coming back into view never undoes a pause by hand.
const session = {
  worker: null,
  standby: false, // Start pressed, waiting for another tab of this browser to let go
  releaseLock: null,
  gpuOk: false,
  autoStarted: false,
  reasons: new Set(), // why we want the worker paused now
  told: new Set(), // reasons the worker was sent a pause message for and no resume yet
};

// ---- rendering ----------------------------------------------------------------------------

// The status flips between "Computing…" and "Waiting…" with every unit, and countdowns
// ("Reconnecting in 3 s…") change each second: the log gets each kind of line once a minute.
const STATE_LOG_EVERY_MS = 60_000;
const stateLogged = new Map(); // gist of a status line -> when it was last logged

function logState(state, detail) {
  const gist = `${state}:${detail.replace(/\d+/g, '#')}`;
  const now = Date.now();
  if (now - (stateLogged.get(gist) ?? -Infinity) < STATE_LOG_EVERY_MS) return;
  stateLogged.set(gist, now);
  log(state === 'error' ? 'error' : 'info', detail);
}

function setState(state, detail) {
  const changed = ui.state.textContent !== state || ui.status.textContent !== detail;
  ui.state.textContent = state;
  ui.statusBox.dataset.state = state;
  ui.stateLabel.textContent = STATE_LABELS[state] ?? state;
  ui.status.textContent = detail;
  document.title = `${STATE_LABELS[state] ?? state} · tabgrid`;
  if (changed && detail) logState(state, detail);
  renderControls();
}

function renderControls() {
  const running = session.worker !== null || session.standby;
  const manual = session.reasons.has(PauseReason.USER);
  show(ui.start, !running, session.gpuOk);
  show(ui.stop, running);
  show(ui.pause, running && !manual);
  show(ui.resume, running && manual);
}

function show(button, visible, enabled = true) {
  button.hidden = !visible;
  button.disabled = !visible || !enabled;
}

function renderConsentNote() {
  const given = settings.consent();
  let text;
  if (session.worker && given) {
    const when = given.at ? `on ${formatDate(given.at)}` : 'earlier in this browser';
    text = session.autoStarted
      ? `Started by itself: you chose to contribute ${when}. Press Stop contributing to withdraw.`
      : `You chose to contribute ${when}; Stop to withdraw.`;
  } else if (!session.gpuOk && given) {
    text =
      'You chose to contribute earlier, but this browser cannot use WebGPU right now, so ' +
      'nothing runs.';
  } else if (ui.state.textContent === 'stopped') {
    text =
      'Nothing runs, and nothing starts by itself, until you press Start again. Your worker ' +
      'id and credit are kept.';
  } else {
    text =
      'Pressing Start is your yes: this tab then computes work units as described here. ' +
      'This browser remembers the choice and starts by itself on later visits, until you ' +
      'press Stop contributing.';
  }
  ui.consentNote.textContent = text;
}

function showWorkerId(workerId) {
  if (workerId) {
    ui.workerId.textContent = workerId.slice(0, 8);
    ui.workerId.dataset.id = workerId;
    ui.workerId.title = workerId;
  } else {
    ui.workerId.textContent = 'not assigned yet';
    delete ui.workerId.dataset.id;
  }
}

function showCap(percent) {
  ui.cap.value = String(percent);
  ui.capValue.textContent = `${percent}%`;
  ui.cap.setAttribute('aria-valuetext', `${percent}% of the time`);
}

function showFigures(s) {
  ui.done.textContent = count(s.done);
  ui.valid.textContent = count(s.valid);
  ui.invalid.textContent = count(s.invalid);
  ui.pending.textContent = count(s.pending);
  ui.errors.textContent = count(s.errors);
  ui.credit.textContent = Number.isFinite(s.credit)
    ? formatCredit(s.credit)
    : '–';
  ui.job.textContent = s.job ?? '–';
  ui.kernel.textContent = s.kernel ?? '–';
  showBusy(s.busy);
  if (Number.isFinite(s.firstResultMs)) {
    ui.firstResult.textContent = formatSeconds(s.firstResultMs);
    ui.firstResult.dataset.ms = String(Math.round(s.firstResultMs));
  }
}

function showBusy(fraction) {
  if (Number.isFinite(fraction)) {
    ui.busy.textContent = `${Math.round(fraction * 100)}%`;
    ui.busy.dataset.fraction = String(fraction);
  } else {
    ui.busy.textContent = '–';
    delete ui.busy.dataset.fraction;
  }
}

// The figures that belong to one Start; the coordinator's all-time standing stays shown.
function resetSessionFigures() {
  ui.done.textContent = '0';
  ui.firstResult.textContent = '–';
  delete ui.firstResult.dataset.ms;
  showBusy(null);
}

function showTile(msg) {
  const problem = drawTile(ui.tile, msg);
  if (problem) {
    log('warn', `A tile could not be drawn: ${problem}.`);
    return;
  }
  const info = describeTile(msg);
  ui.tileInfo.textContent = info;
  ui.tile.setAttribute('aria-label', `Mandelbrot tile, ${info}`);
  ui.tile.closest('figure')?.classList.add('has-tile');
}

// What the unit about to run computes, in plain words; for an embedding job the model, for
// whom, and the megabytes of model to download before it starts (none once cached).
let workLogged = '';

function showWork(msg) {
  if (msg.kernel !== 'embed') {
    ui.work.hidden = true;
    return;
  }
  const model = msg.model ? String(msg.model) : 'an AI language model';
  const whom = msg.owner ? ` for ${msg.owner}` : '';
  const texts = Number.isFinite(msg.texts) ? `, ${count(msg.texts)} texts` : '';
  const job = msg.name ? ` (“${msg.name}”${texts})` : '';
  let text =
    `This tab computes sentence embeddings with ${model}${whom}${job}: numbers that ` +
    'capture what each text means, for search and clustering.';
  if (msg.fetchBytes > 0) {
    text += ` Before its first unit it downloads ${formatMB(msg.fetchBytes)} of model, once; later units reuse it.`;
  } else {
    text += ` The model (${formatMB(msg.totalBytes)}) is already in this browser's cache.`;
  }
  ui.work.textContent = text;
  ui.work.hidden = false;
  ui.work.dataset.model = model;
  ui.work.dataset.fetchBytes = String(msg.fetchBytes ?? 0);
  const gist = `${msg.job}:${msg.fetchBytes > 0}`;
  if (gist !== workLogged) {
    workLogged = gist;
    log('info', text);
  }
}

const formatMB = (bytes) => `${(bytes / 1e6).toLocaleString(undefined, { maximumFractionDigits: 1 })} MB`;

function log(level, text) {
  const item = document.createElement('li');
  item.className = `log-${level}`;
  const time = document.createElement('time');
  const now = new Date();
  time.dateTime = now.toISOString();
  time.textContent = now.toLocaleTimeString(undefined, { hour12: false });
  item.append(time, ' ', text);
  // Follow new lines only if the reader has not scrolled up to read older ones.
  const atEnd = ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 8;
  ui.log.append(item);
  while (ui.log.childElementCount > LOG_LINES) ui.log.firstElementChild.remove();
  if (atEnd) ui.log.scrollTop = ui.log.scrollHeight;
}

const count = (n) => (Number.isFinite(n) ? n.toLocaleString() : '–');

// Credit is GFLOP of validated work: small units earn thousandths, so keep three significant
// digits rather than showing 0.
function formatCredit(gflop) {
  if (gflop === 0) return '0';
  if (gflop >= 100) return gflop.toLocaleString(undefined, { maximumFractionDigits: 0 });
  return gflop.toLocaleString(undefined, { maximumSignificantDigits: 3 });
}

function formatSeconds(ms) {
  const s = ms / 1000;
  return s < 100 ? `${s.toFixed(1)} s` : `${Math.round(s)} s`;
}

const formatDate = (date) => date.toLocaleDateString(undefined, { dateStyle: 'long' });

// A short, non-identifying name for the coordinator's worker list: "Firefox on Linux".
function browserName() {
  const ua = navigator.userAgent;
  const browser =
    [
      [/Edg\//, 'Edge'],
      [/OPR\//, 'Opera'],
      [/Firefox\//, 'Firefox'],
      [/Chrom(e|ium)\//, 'Chrome'],
      [/Safari\//, 'Safari'],
    ].find(([re]) => re.test(ua))?.[1] ?? 'browser';
  const os =
    [
      [/Android/, 'Android'],
      [/iPhone|iPad/, 'iOS'],
      [/Windows/, 'Windows'],
      [/Mac OS X|Macintosh/, 'macOS'],
      [/CrOS/, 'ChromeOS'],
      [/Linux/, 'Linux'],
    ].find(([re]) => re.test(ua))?.[1] ?? null;
  return os ? `${browser} on ${os}` : browser;
}

// ---- the worker ---------------------------------------------------------------------------

function start({ auto = false } = {}) {
  if (session.worker || session.standby || !session.gpuOk) return;
  const { worker: workerUrl } = document.body.dataset;
  if (!workerUrl || workerUrl.startsWith('%')) {
    setState('error', 'This page was served without its build step, so there is no worker to run.');
    return;
  }
  if (!auto) settings.giveConsent();
  session.autoStarted = auto;
  if (!navigator.locks) {
    launch();
    return;
  }
  session.standby = true;
  renderControls();
  navigator.locks.request(CONTRIBUTOR_LOCK, { ifAvailable: true }, (lock) => {
    if (lock) return held();
    setState('standby', 'Another tab of this browser is already contributing. This tab takes over if that one closes.');
    return navigator.locks.request(CONTRIBUTOR_LOCK, held);
  });
}

// Runs while this tab holds the lock; the lock goes when the promise settles (on Stop) or
// when the tab closes.
function held() {
  return new Promise((release) => {
    if (!session.standby) {
      release(); // stopped while standing by
      return;
    }
    session.standby = false;
    session.releaseLock = release;
    launch();
  });
}

function launch() {
  const { worker: workerUrl, pyodideIndex, pyodideLock } = document.body.dataset;
  session.reasons.clear();
  session.told.clear();
  // Started in a background tab (a remembered consent on reload): begin paused.
  if (ui.pauseHidden.checked && document.hidden) {
    session.reasons.add(PauseReason.HIDDEN);
    session.told.add(PauseReason.HIDDEN);
  }
  resetSessionFigures();
  const identity = settings.identity();
  const worker = new Worker(workerUrl, { type: 'module' });
  // A stopped worker may still talk during its grace period; only the current one is heard.
  const current = () => session.worker === worker;
  worker.addEventListener('message', (event) => current() && onMessage(event.data));
  worker.addEventListener('error', (event) => {
    event.preventDefault();
    if (!current()) return;
    const why = event.message || 'its script could not be loaded';
    setState('error', `The worker stopped with an error: ${why}. Reload the page to try again.`);
  });
  worker.addEventListener('messageerror', () => {
    if (current()) log('warn', 'A message from the worker could not be read.');
  });
  session.worker = worker;
  worker.postMessage(
    startMessage({
      indexURL: new URL(pyodideIndex, location.href).href,
      lockFileURL: new URL(pyodideLock, location.href).href,
      wsURL: `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/api/v1/worker`,
      workerId: identity?.workerId ?? null,
      secret: identity?.secret ?? null,
      name: browserName(),
      duty: Number(ui.cap.value) / 100,
      paused: session.told.size > 0,
    }),
  );
  setState(
    session.told.size > 0 ? 'paused' : 'loading',
    session.told.size > 0 ? 'Starting paused because this tab is hidden.' : 'Starting…',
  );
  renderConsentNote();
}

function stop() {
  const worker = session.worker;
  if (session.standby) {
    session.standby = false;
    settings.withdrawConsent();
    setState('stopped', 'Stopped. Your choice to contribute is withdrawn for this browser.');
    renderConsentNote();
    return;
  }
  if (!worker) return;
  settings.withdrawConsent();
  session.worker = null;
  session.reasons.clear();
  session.told.clear();
  worker.postMessage(stopMessage());
  const release = session.releaseLock;
  session.releaseLock = null;
  setTimeout(() => {
    worker.terminate();
    release?.();
  }, STOP_GRACE_MS);
  showBusy(null);
  ui.job.textContent = '–';
  ui.kernel.textContent = '–';
  ui.work.hidden = true;
  setState('stopped', 'Stopped. Your choice to contribute is withdrawn for this browser.');
  renderConsentNote();
}

function send(message) {
  session.worker?.postMessage(message);
}

function pause(reason) {
  session.reasons.add(reason);
  if (!session.told.has(reason)) {
    session.told.add(reason);
    send(pauseMessage(reason));
  }
  renderControls();
}

function resume(reason) {
  if (!session.reasons.delete(reason)) return;
  if (session.reasons.size === 0) {
    for (const told of session.told) send(resumeMessage(told));
    session.told.clear();
  }
  renderControls();
}

// A message from the worker (page-messages.js).
function onMessage(msg) {
  if (!msg || typeof msg !== 'object') return;
  switch (msg.type) {
    case ToPage.STATE:
      setState(String(msg.state), String(msg.detail ?? ''));
      break;
    case ToPage.IDENTITY:
      if (typeof msg.workerId === 'string' && typeof msg.secret === 'string') {
        settings.setIdentity(msg.workerId, msg.secret);
        showWorkerId(msg.workerId);
      }
      break;
    case ToPage.ADAPTER:
      ui.gpu.textContent = describeGpu(msg);
      break;
    case ToPage.FIGURES:
      showFigures(msg);
      break;
    case ToPage.TILE:
      showTile(msg);
      break;
    case ToPage.WORK:
      showWork(msg);
      break;
    case ToPage.LOG:
      log(['info', 'warn', 'error'].includes(msg.level) ? msg.level : 'info', String(msg.text));
      break;
    default:
      break; // a newer worker may say more than this page knows; not an error
  }
}

// ---- wiring -------------------------------------------------------------------------------

function wire() {
  // The clicked button disappears, so hand focus to the one that takes its place.
  ui.start.addEventListener('click', () => {
    start();
    if (session.worker) ui.pause.hidden ? ui.stop.focus() : ui.pause.focus();
  });
  ui.stop.addEventListener('click', () => {
    stop();
    ui.start.focus();
  });
  ui.pause.addEventListener('click', () => {
    pause(PauseReason.USER);
    ui.resume.focus();
  });
  ui.resume.addEventListener('click', () => {
    resume(PauseReason.USER);
    ui.pause.focus();
  });
  ui.cap.addEventListener('input', () => {
    const percent = Number(ui.cap.value);
    showCap(percent);
    settings.setCap(percent);
    send(capMessage(percent / 100));
  });
  ui.pauseHidden.addEventListener('change', () => {
    settings.setPauseHidden(ui.pauseHidden.checked);
    if (!session.worker) return;
    if (ui.pauseHidden.checked && document.hidden) pause(PauseReason.HIDDEN);
    else if (!ui.pauseHidden.checked) resume(PauseReason.HIDDEN);
  });
  document.addEventListener('visibilitychange', () => {
    if (!session.worker) return;
    if (document.hidden && ui.pauseHidden.checked) pause(PauseReason.HIDDEN);
    else if (!document.hidden) resume(PauseReason.HIDDEN);
  });
}

async function init() {
  showCap(settings.cap());
  ui.pauseHidden.checked = settings.pauseHidden();
  showWorkerId(settings.identity()?.workerId ?? null);
  wire();
  setState('idle', 'Looking for a GPU…');
  renderConsentNote();

  const gpu = await probeGpu();
  session.gpuOk = gpu.ok;
  if (!gpu.ok) {
    ui.gpu.textContent = 'none available';
    const [status, why] = NO_WEBGPU[gpu.reason];
    ui.noWebgpuReason.textContent = gpu.reason === 'failed' ? `${why}: ${gpu.message}.` : why;
    ui.noWebgpu.hidden = false;
    setState('idle', status);
    renderConsentNote();
    return;
  }
  ui.gpu.textContent = describeGpu(gpu);
  if (settings.consent()) {
    start({ auto: true });
  } else {
    setState('idle', 'Ready. Nothing runs until you press Start.');
  }
  renderControls();
}

init();
