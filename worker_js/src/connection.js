// The worker websocket: hello/welcome, then messages both ways; reconnects with backoff
// and full jitter so that a restarted coordinator is not met by every tab at once.

const BASE_DELAY_MS = 1000;
const MAX_DELAY_MS = 60000;

export function backoffDelay(attempt) {
  const cap = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** attempt);
  return cap / 2 + Math.random() * (cap / 2);
}

export class Connection {
  // hello(): the hello message to send (read at each connect, so it carries the latest
  // identity); on: {welcome(msg), message(msg), closed(reason, delayMs)}.
  constructor(url, hello, on) {
    this.url = url;
    this.hello = hello;
    this.on = on;
    this.ws = null;
    this.welcome = null;
    this.attempt = 0;
    this.stopped = false;
    this.timer = null;
  }

  get open() {
    return this.welcome !== null && this.ws?.readyState === WebSocket.OPEN;
  }

  connect() {
    if (this.stopped) return;
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => ws.send(JSON.stringify(this.hello()));
    ws.onmessage = (event) => this.receive(ws, event.data);
    ws.onclose = (event) => this.closed(ws, event.reason || `connection closed (code ${event.code})`);
    ws.onerror = () => {}; // onclose follows with what there is to say
  }

  receive(ws, data) {
    if (ws !== this.ws || typeof data !== 'string') return;
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (msg.type === 'welcome') {
      this.welcome = msg;
      this.attempt = 0;
      this.on.welcome(msg);
    } else {
      this.on.message(msg);
    }
  }

  closed(ws, reason) {
    if (ws !== this.ws) return;
    this.ws = null;
    this.welcome = null;
    if (this.stopped) return;
    const delay = backoffDelay(this.attempt++);
    this.on.closed(reason, delay);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  send(msg) {
    if (!this.open) return false;
    this.ws.send(typeof msg === 'string' ? msg : JSON.stringify(msg));
    return true;
  }

  stop(reason) {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) {
      if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: 'bye', reason }));
      this.ws.close(1000, reason);
    }
    this.ws = null;
    this.welcome = null;
  }
}
