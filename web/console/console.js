// The operator console: signs in with an operator token, follows the coordinator's live
// snapshot stream, and sends operator actions (ban, drain, pause, priority, tokens).

import { AUTH_MESSAGES, onAuthFailure, post, token } from './api.js';
import { AuditLog } from './audit.js';
import { Charts } from './charts.js';
import { askBanReason, confirmAction } from './dialogs.js';
import { renderDisagreements } from './disagreements.js';
import { $, setHidden, setText } from './dom.js';
import * as fmt from './format.js';
import { JobsTable } from './jobs.js';
import { renderNetwork } from './network.js';
import { Picture } from './picture.js';
import { SnapshotStream } from './stream.js';
import { TokensPanel } from './tokens.js';
import { WorkersTable } from './workers.js';

const TOAST_MS = 5000;
const STALE_MS = 5000; // not live this long: the figures on screen are greyed out

const live = {
  state: 'stopped',
  retryAt: 0,
  liveAt: 0, // when the stream was last live (this clock, ms)
  lastUpdate: null, // server time of the latest snapshot
  offset: 0, // server clock minus this clock, seconds
  signingIn: false,
};

const charts = new Charts();
const picture = new Picture();
const audit = new AuditLog();
const tokens = new TokensPanel({ confirm: confirmAction, notify: toast, changed: refreshAudit });
const jobs = new JobsTable({ onAction: jobAction, onSelect: selectJob });
const workers = new WorkersTable({ onQuery: () => stream.restart(), onAction: workerAction });
const stream = new SnapshotStream({
  url: () => `/api/v1/console/stream?${workers.params()}`,
  onSnapshot: render,
  onState: streamState,
  onAuthFailure: (status) => signOut(AUTH_MESSAGES[status]),
});
onAuthFailure((status) => signOut(AUTH_MESSAGES[status]));

// ---- sign in and out -------------------------------------------------------------------------

function showLogin(message) {
  setHidden($('console'), true);
  setHidden($('topbar-status'), true);
  setHidden($('login'), false);
  setText($('login-error'), message ?? '');
  setHidden($('login-error'), !message);
  $('login-submit').disabled = false;
  $('login-token').focus();
}

function showConsole() {
  live.signingIn = false;
  setHidden($('login'), true);
  setHidden($('login-error'), true);
  setHidden($('console'), false);
  setHidden($('topbar-status'), false);
  audit.start();
  tokens.refresh();
}

function signIn(value) {
  token.set(value);
  live.signingIn = true;
  $('login-submit').disabled = true;
  stream.restart();
}

function signOut(message) {
  const wasSignedIn = token.get() != null;
  token.clear();
  stream.stop();
  audit.stop();
  picture.reset();
  tokens.reset();
  charts.clear();
  // The next person to sign in must not see this session's data, even for a moment.
  for (const id of ['jobs', 'workers', 'disagreements', 'audit']) $(id).replaceChildren();
  live.lastUpdate = null;
  live.signingIn = false;
  $('login-token').value = '';
  if (wasSignedIn || message) showLogin(message);
}

$('login-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const value = $('login-token').value.trim();
  if (value) signIn(value);
});
$('signout').addEventListener('click', () => signOut());

// ---- the stream ------------------------------------------------------------------------------

function streamState(state, { retryAt }) {
  live.state = state;
  live.retryAt = retryAt ?? 0;
  // The sign-in form waits for the coordinator's answer; a token it accepted (or a
  // coordinator that is down, not refusing) leads into the console.
  if (live.signingIn && (state === 'open' || state === 'live' || state === 'reconnecting')) {
    showConsole();
  }
  showLive();
}

function showLive() {
  const indicator = $('live');
  const isLive = live.state === 'live' || live.state === 'open';
  indicator.dataset.state = isLive ? 'live' : 'reconnecting';
  if (isLive) live.liveAt = Date.now();
  const stale = !isLive && live.lastUpdate != null && Date.now() - live.liveAt > STALE_MS;
  $('console').toggleAttribute('data-stale', stale);
  const last = live.lastUpdate ? `updated ${fmt.clockTime(live.lastUpdate)}` : 'no data yet';
  const wait = Math.max(0, Math.ceil((live.retryAt - Date.now()) / 1000));
  let text = 'Connecting…';
  if (isLive) text = `Live · ${last}`;
  else if (live.state === 'reconnecting') {
    text = `${wait ? `Reconnecting in ${wait}s` : 'Reconnecting…'} · ${last}`;
  }
  setText($('live-text'), text);
  setText($('server-time'), live.lastUpdate ? fmt.clockTime(Date.now() / 1000 + live.offset) : '–');
}

function render(snapshot) {
  live.lastUpdate = snapshot.t;
  live.offset = snapshot.t - Date.now() / 1000;
  showLive();
  // Each part on its own: one malformed field must not freeze the rest of the page.
  const parts = [
    () => renderNetwork(snapshot.network),
    () => charts.update(snapshot.series, snapshot.series_full),
    () => {
      jobs.render(snapshot.jobs);
      picture.update(snapshot.jobs);
      jobs.select(picture.selectedId());
    },
    () => workers.render(snapshot.workers, snapshot.t),
    () => renderDisagreements(snapshot.disagreements, (id) => workers.showWorker(id)),
  ];
  for (const part of parts) {
    try {
      part();
    } catch (error) {
      console.error('console: could not show part of a snapshot', error);
    }
  }
}

setInterval(() => {
  if (token.get()) showLive();
}, 1000);

// ---- actions ---------------------------------------------------------------------------------

function toast(text, kind = 'ok') {
  const box = $('toast');
  box.textContent = text;
  box.dataset.kind = kind;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (box.hidden = true), kind === 'error' ? 2 * TOAST_MS : TOAST_MS);
}

function refreshAudit() {
  audit.refresh();
}

// Runs one action: the button stays disabled meanwhile; the outcome goes to the toast, and
// the change itself shows up in the next snapshot.
async function act(button, done, failed, request) {
  if (button) button.disabled = true;
  try {
    await request();
    toast(done);
    refreshAudit();
    return true;
  } catch (error) {
    if (error.status !== 401 && error.status !== 403) {
      toast(`${failed}: ${error.detail ?? error.message}`, 'error');
    }
    return false;
  } finally {
    if (button) button.disabled = false;
  }
}

function actionButton(selector) {
  return document.querySelector(selector);
}

async function workerAction(worker, action) {
  const id = worker.id;
  const path = `/api/v1/workers/${encodeURIComponent(id)}/${action}`;
  const button = actionButton(`tr[data-worker="${CSS.escape(id)}"] [data-action="${action}"]`);
  const short = fmt.shortId(id);
  if (action === 'ban') {
    const reason = await askBanReason(id);
    if (!reason) return;
    await act(button, `Banned worker ${short}`, `Ban of ${short} failed`, () =>
      post(path, { reason }),
    );
    return;
  }
  const labels = { unban: 'Unbanned', drain: 'Draining', undrain: 'Undrained' };
  const failed = `${action[0].toUpperCase()}${action.slice(1)} of ${short} failed`;
  await act(button, `${labels[action]} worker ${short}`, failed, () => post(path, {}));
}

async function jobAction(job, action, value, saved) {
  const path = `/api/v1/jobs/${encodeURIComponent(job.id)}/${action}`;
  const row = `tr[data-job="${CSS.escape(String(job.id))}"]`;
  const button = actionButton(`${row} [data-action="${action}"]`);
  const name = `job ${job.id} (${job.name})`;
  if (action === 'priority') {
    if (!Number.isInteger(value) || value < -1000 || value > 1000) {
      toast('Priority is a whole number from -1000 to 1000', 'error');
      return;
    }
    const ok = await act(button, `Priority of ${name} set to ${value}`, 'Set priority failed', () =>
      post(path, { priority: value }),
    );
    if (ok) saved?.();
    return;
  }
  if (action === 'cancel') {
    const ok = await confirmAction(
      `Cancel ${name}? Its unfinished units are dropped; validated results are kept.`,
      'Cancel job',
    );
    if (!ok) return;
  }
  const labels = { pause: 'Paused', resume: 'Resumed', cancel: 'Cancelled' };
  const failed = `${action[0].toUpperCase()}${action.slice(1)} of job ${job.id} failed`;
  await act(button, `${labels[action]} ${name}`, failed, () => post(path, {}));
}

function selectJob(job) {
  picture.select(job);
  jobs.select(job.id);
}

// ---- start -----------------------------------------------------------------------------------

if (token.get()) {
  showConsole();
  stream.restart();
} else {
  showLogin();
}
