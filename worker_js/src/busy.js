// The fraction of wall time spent computing over a sliding window: what the usage cap
// controls and what the page shows.

export class BusyMeter {
  constructor(windowMs = 60000) {
    this.windowMs = windowMs;
    this.since = performance.now();
    this.spans = [];
  }

  add(start, end) {
    this.spans.push([start, end]);
    const horizon = end - this.windowMs;
    while (this.spans.length && this.spans[0][1] < horizon) this.spans.shift();
  }

  fraction(now = performance.now()) {
    const from = Math.max(this.since, now - this.windowMs);
    if (now <= from) return 0;
    let busy = 0;
    for (const [start, end] of this.spans) busy += Math.max(0, Math.min(end, now) - Math.max(start, from));
    return Math.min(1, busy / (now - from));
  }
}
