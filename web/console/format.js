// Number, time and id formatting, one style for the whole console.

const integer = new Intl.NumberFormat('en');
const clock = new Intl.DateTimeFormat(undefined, {
  hour: '2-digit',
  minute: '2-digit',
  second: '2-digit',
  hourCycle: 'h23',
});
const dateTime = new Intl.DateTimeFormat(undefined, {
  year: 'numeric',
  month: '2-digit',
  day: '2-digit',
  hour: '2-digit',
  minute: '2-digit',
  hourCycle: 'h23',
});

export const DASH = '–';

export function count(n) {
  return n == null ? DASH : integer.format(Math.round(n));
}

// Rates keep two significant digits when small, so 0.2 invalid/s does not read as 0.
export function rate(x) {
  if (x == null || Number.isNaN(x)) return DASH;
  if (x === 0) return '0';
  if (Math.abs(x) < 1) return x.toFixed(2);
  if (Math.abs(x) < 100) return x.toFixed(1);
  return integer.format(Math.round(x));
}

export function credit(x) {
  if (x == null) return DASH;
  if (x < 10) return x.toFixed(2);
  if (x < 1000) return x.toFixed(1);
  return integer.format(Math.round(x));
}

export function duration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return DASH;
  const s = Math.max(0, Math.round(seconds));
  const pad = (n) => String(n).padStart(2, '0');
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

export function clockTime(epochSeconds) {
  return epochSeconds == null ? DASH : clock.format(new Date(epochSeconds * 1000));
}

// Today's times as a clock, older ones with their date.
export function when(epochSeconds) {
  if (epochSeconds == null) return DASH;
  const date = new Date(epochSeconds * 1000);
  const today = new Date().toDateString() === date.toDateString();
  return today ? clock.format(date) : dateTime.format(date);
}

export function fullTime(epochSeconds) {
  return epochSeconds == null ? '' : new Date(epochSeconds * 1000).toString();
}

export function shortId(id) {
  return id == null ? DASH : String(id).slice(0, 8);
}
