// The page's choices, kept in localStorage. Storage can be disabled or full (private
// windows, strict settings), so every access is guarded: the page then simply forgets.

const KEYS = {
  consent: 'tabgrid.consent',
  consentAt: 'tabgrid.consentAt',
  cap: 'tabgrid.cap',
  pauseHidden: 'tabgrid.pauseHidden',
  worker: 'tabgrid.worker',
};

function read(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

function write(key, value) {
  try {
    if (value === null) localStorage.removeItem(key);
    else localStorage.setItem(key, value);
  } catch {
    // Not remembered; the page still works for this visit.
  }
}

/** The date Start was pressed, or null when there is no remembered consent. */
export function consent() {
  if (read(KEYS.consent) !== 'yes') return null;
  const at = new Date(read(KEYS.consentAt) ?? '');
  // Consent stored without a date (older page, or set by hand) is still consent.
  return Number.isNaN(at.getTime()) ? { at: null } : { at };
}

export function giveConsent(now = new Date()) {
  write(KEYS.consent, 'yes');
  write(KEYS.consentAt, now.toISOString());
}

export function withdrawConsent() {
  write(KEYS.consent, null);
  write(KEYS.consentAt, null);
}

export const CAP_MIN = 10;
export const CAP_MAX = 100;
export const CAP_STEP = 10;

/** Usage cap in percent, snapped to the slider's steps; 100 when unset or invalid. */
export function cap() {
  const value = Number.parseInt(read(KEYS.cap) ?? '', 10);
  if (!Number.isFinite(value)) return CAP_MAX;
  const snapped = Math.round(value / CAP_STEP) * CAP_STEP;
  return Math.min(CAP_MAX, Math.max(CAP_MIN, snapped));
}

export function setCap(percent) {
  write(KEYS.cap, String(percent));
}

/** "Pause while this tab is hidden": on unless explicitly turned off. */
export function pauseHidden() {
  return read(KEYS.pauseHidden) !== '0';
}

export function setPauseHidden(on) {
  write(KEYS.pauseHidden, on ? '1' : '0');
}

/** {workerId, secret} from an earlier visit, or null. */
export function identity() {
  try {
    const parsed = JSON.parse(read(KEYS.worker) ?? 'null');
    if (parsed && typeof parsed.workerId === 'string' && typeof parsed.secret === 'string') {
      return { workerId: parsed.workerId, secret: parsed.secret };
    }
  } catch {
    // Corrupt entry: start as a new worker rather than fail.
  }
  return null;
}

export function setIdentity(workerId, secret) {
  write(KEYS.worker, JSON.stringify({ workerId, secret }));
}
