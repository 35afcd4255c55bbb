// The browser worker (worker_js/src/worker.js) under Node, with a fake WebSocket and a fake
// Pyodide: it sends a result, loses the connection, sends the result again first thing after
// the next welcome without computing it again, and forgets it once acknowledged; a unit called
// back while it computes gives no result; results sent again keep to the count a welcome says.
//   node tab_resends.mjs WORKER_JS_URL FAKE_PYODIDE_DIR_URL    (prints a JSON summary)

const [workerURL, indexURL] = process.argv.slice(2);
const sockets = [];
const runs = [];

class FakeWebSocket {
  static OPEN = 1;
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    sockets.push(this);
    setTimeout(() => {
      this.readyState = FakeWebSocket.OPEN;
      this.onopen?.();
    }, 0);
  }
  send(data) {
    this.sent.push(JSON.parse(data));
  }
  close() {
    this.readyState = 3;
  }
  deliver(msg) {
    this.onmessage({ data: JSON.stringify(msg) });
  }
  drop() {
    this.readyState = 3;
    this.onclose({ code: 1006, reason: 'connection lost' });
  }
}

globalThis.self = globalThis;
globalThis.WebSocket = FakeWebSocket;
globalThis.KERNELS = ['checksum'];
globalThis.__runs = runs;
const gpu = { requestAdapter: async () => ({ info: { vendor: 'fake' } }) };
Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true });
const posted = [];
globalThis.postMessage = (msg) => posted.push(msg);

async function until(what, predicate, ms = 5000) {
  const end = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const kinds = (ws) => ws.sent.map((m) => m.type);
const welcome = {
  type: 'welcome',
  worker_id: 'w-1',
  secret: 's-1',
  max_inline: 4096,
  max_message: 1 << 20,
  acks: true,
};
const lease = { lease: 7, job: 1, unit: 107, index: 0, params: {}, inputs: {}, deadline: 0, spec: 'k1' };

await import(workerURL);
self.onmessage({ data: { type: 'start', config: { wsURL: 'ws://127.0.0.1:9/api/v1/worker', indexURL, name: 't' } } });
const out = {};

await until('the first hello', () => sockets.length === 1 && sockets[0].sent.length === 1);
const first = sockets[0];
out.helloAcks = first.sent[0].acks;
first.deliver(welcome);
await until('a ready', () => kinds(first).includes('ready'));
first.deliver({ type: 'job', job: 1, kernel: 'checksum', params: {}, inputs: {}, key: 'k1' });
first.deliver({ type: 'lease', leases: [lease] });
await until('the result', () => kinds(first).includes('result'));
const sent = first.sent.find((m) => m.type === 'result').results;
out.sent = sent.map((r) => r.lease);
first.drop();

await until('the second hello', () => sockets.length === 2 && sockets[1].sent.length === 1);
const second = sockets[1];
second.deliver(welcome);
await until('a ready', () => kinds(second).includes('ready'));
out.afterWelcome = kinds(second);
out.resent = second.sent[1].results?.map((r) => r.lease);
out.sameResult = JSON.stringify(second.sent[1].results?.[0]) === JSON.stringify(sent[0]);
second.deliver({ type: 'ack', leases: [7] });
second.drop();

await until('the third hello', () => sockets.length === 3 && sockets[2].sent.length === 1);
const third = sockets[2];
third.deliver(welcome);
await until('a ready', () => kinds(third).includes('ready'));
out.afterAck = kinds(third);
out.runs = runs.length;

let finish;
globalThis.__hold = new Promise((resolve) => {
  finish = resolve;
});
third.deliver({ type: 'lease', leases: [{ ...lease, lease: 8, unit: 108 }] });
await until('the second unit computing', () => runs.length === 2);
third.deliver({ type: 'cancel', leases: [8], reason: 'job failed' });
finish();
await until('its end logged', () => posted.some((m) => m.type === 'log' && m.text.includes('called back')));
await until('a ready after it', () => kinds(third).filter((k) => k === 'ready').length === 2);
out.afterCallBack = kinds(third);

// Two results no ack named, then a coordinator that takes one a message: sent in two.
const resultsOf = (ws) => ws.sent.filter((m) => m.type === 'result').flatMap((m) => m.results);
third.deliver({ type: 'lease', leases: [9, 10].map((n) => ({ ...lease, lease: n, unit: 100 + n })) });
await until('two more results', () => resultsOf(third).length === 2);
third.drop();
await until('the fourth hello', () => sockets.length === 4 && sockets[3].sent.length === 1);
const fourth = sockets[3];
fourth.deliver({ ...welcome, max_results: 1 });
await until('both sent again', () => resultsOf(fourth).length === 2);
out.resentOneByOne = fourth.sent.filter((m) => m.type === 'result').map((m) => m.results.map((r) => r.lease));
out.logs = posted.filter((m) => m.type === 'log').map((m) => m.text);
self.onmessage({ data: { type: 'stop' } });
console.log(JSON.stringify(out));
process.exit(0);
