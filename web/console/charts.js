// The last hour as four small uPlot charts. The first snapshot of a stream carries the whole
// hour; later ones carry only newer points, appended here and trimmed to an hour.

import uPlot from 'uplot';

const HOUR_S = 3600;
const HEIGHT = 120;
const FIELDS = ['validated', 'valid', 'invalid', 'error', 'workers', 'queue'];

// Chart id -> its series: [field, label, colour variable, filled?].
const CHARTS = {
  'chart-validated': [['validated', 'validated/s', '--ok', true]],
  'chart-results': [
    ['valid', 'valid', '--ok', false],
    ['invalid', 'invalid', '--warn', false],
    ['error', 'error', '--bad', false],
  ],
  'chart-workers': [['workers', 'workers', '--accent', true]],
  'chart-queue': [['queue', 'queue', '--violet', true]],
};

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

// '#1e8a4c' -> 'rgba(30, 138, 76, 0.15)' for the area under a line.
function translucent(hex, alpha) {
  const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex);
  if (!m) return hex;
  const [r, g, b] = m.slice(1).map((h) => parseInt(h, 16));
  return `rgba(${r}, ${g}, ${b}, ${alpha})`;
}

function valueText(v) {
  if (v == null) return '–';
  return Math.abs(v) >= 100 ? Math.round(v).toLocaleString('en') : String(+v.toFixed(2));
}

const hhmm = new Intl.DateTimeFormat(undefined, {
  hour: '2-digit',
  minute: '2-digit',
  hourCycle: 'h23',
});
const hhmmss = new Intl.DateTimeFormat(undefined, {
  hour: '2-digit',
  minute: '2-digit',
  second: '2-digit',
  hourCycle: 'h23',
});

// The chart's own legend, in its caption: the latest values, or the hovered ones.
function legend(box, series) {
  const caption = box.closest('figure').querySelector('figcaption');
  const row = document.createElement('span');
  row.className = 'chart-legend';
  const at = document.createElement('span');
  at.className = 'chart-at';
  const values = series.map(([, label, colour]) => {
    const item = document.createElement('span');
    item.className = 'chart-key';
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.style.background = cssVar(colour);
    const value = document.createElement('b');
    item.append(swatch, series.length > 1 ? `${label} ` : '', value);
    row.append(item);
    return value;
  });
  row.prepend(at);
  caption.querySelector('.chart-legend')?.remove();
  caption.append(row);
  return (u) => {
    const hovered = u.cursor.idx;
    const i = hovered ?? u.data[0].length - 1;
    at.textContent = hovered != null && u.data[0][i] ? hhmmss.format(u.data[0][i] * 1000) : 'now';
    values.forEach((value, k) => (value.textContent = valueText(u.data[k + 1][i])));
  };
}

function options(width, series, showValues) {
  const axis = {
    stroke: cssVar('--muted'),
    grid: { stroke: cssVar('--line'), width: 1 },
    ticks: { stroke: cssVar('--line'), width: 1, size: 4 },
    font: '11px system-ui, sans-serif',
  };
  return {
    width,
    height: HEIGHT,
    padding: [6, 16, 0, 0], // room on the right for the last time label
    cursor: { sync: { key: 'tabgrid-console' }, drag: { x: false, y: false } },
    legend: { show: false },
    hooks: { setCursor: [showValues], setData: [showValues] },
    scales: {
      // Always the whole last hour, so a quiet start does not stretch a few points wide.
      x: { time: true, range: (u, min, max) => hour(max) },
      y: { range: (u, min, max) => [0, max > 0 ? max * 1.12 : 1] },
    },
    axes: [
      { ...axis, space: 60, values: (u, splits) => splits.map((t) => hhmm.format(t * 1000)) },
      { ...axis, size: 44, values: (u, splits) => splits.map((v) => compact(v)) },
    ],
    series: [
      { label: 'time' },
      ...series.map(([, label, colour, filled]) => {
        const stroke = cssVar(colour);
        return {
          label,
          stroke,
          width: 1.5,
          fill: filled ? translucent(stroke, 0.15) : undefined,
          points: { show: false },
        };
      }),
    ],
  };
}

function hour(end) {
  const last = Number.isFinite(end) ? end : Date.now() / 1000;
  return [last - HOUR_S, last];
}

function compact(v) {
  if (v >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
  if (v >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
  return String(+v.toFixed(2));
}

export class Charts {
  constructor() {
    this.data = Object.fromEntries(['t', ...FIELDS].map((f) => [f, []]));
    this.plots = new Map(); // container id -> uPlot
    this.observer = new ResizeObserver((entries) => this.#resize(entries));
    // Colours come from CSS variables: rebuild when the colour scheme flips.
    matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => this.#rebuild());
  }

  update(series, full) {
    if (!series?.t) return;
    if (full) {
      for (const f of ['t', ...FIELDS]) this.data[f] = [...(series[f] ?? [])];
    } else {
      this.#append(series);
    }
    this.#trim();
    this.#draw();
  }

  clear() {
    for (const f of ['t', ...FIELDS]) this.data[f] = [];
    this.#draw();
  }

  #append(series) {
    const last = this.data.t.at(-1) ?? -Infinity;
    series.t.forEach((t, i) => {
      if (t <= last) return;
      this.data.t.push(t);
      for (const f of FIELDS) this.data[f].push(series[f]?.[i] ?? null);
    });
  }

  #trim() {
    const t = this.data.t;
    if (!t.length) return;
    const cut = t.findIndex((x) => x >= t.at(-1) - HOUR_S);
    if (cut > 0) for (const f of ['t', ...FIELDS]) this.data[f].splice(0, cut);
  }

  #draw() {
    for (const [id, series] of Object.entries(CHARTS)) {
      const data = [this.data.t, ...series.map(([field]) => this.data[field])];
      const plot = this.plots.get(id);
      if (plot) {
        plot.setData(data);
        continue;
      }
      const box = document.getElementById(id);
      if (!box || !box.clientWidth) continue; // hidden: built once it has a size
      const showValues = legend(box, series);
      this.plots.set(id, new uPlot(options(box.clientWidth, series, showValues), data, box));
      this.observer.observe(box);
    }
  }

  #resize(entries) {
    for (const entry of entries) {
      const plot = this.plots.get(entry.target.id);
      const width = Math.floor(entry.contentRect.width);
      if (plot && width > 0 && width !== plot.width) plot.setSize({ width, height: HEIGHT });
    }
  }

  #rebuild() {
    for (const [id, plot] of this.plots) {
      this.observer.unobserve(document.getElementById(id));
      plot.destroy();
    }
    this.plots.clear();
    this.#draw();
  }
}
