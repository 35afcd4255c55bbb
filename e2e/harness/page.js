// The harness page: starts the harness worker (harness.js) and relays to it.
//
//   await window.harness.ready            // resolves once the worker is up
//   await window.harness.call(msg)        // one command (see harness.js); rejects on error
//       // inputs' data may be a Uint8Array, a base64 string or an array of byte values
//       // (page.evaluate carries plain JSON reliably, typed arrays less so)
//   await window.harness.call(msg, {b64: true})
//       // the same, with outputs' data returned as base64 strings
//   await window.harness.manifest         // web/dist/manifest.json
//
// #ready gets data-ready="1" when the worker answers, data-error when it fails to start.
//
// Without page.evaluate (so under the page's real CSP, no bypass_csp): open
// harness.html?calls=<URL-encoded JSON array of messages>; the page makes the calls in order
// and puts the JSON array of their values in #result's data-value, or the first failure's
// text in its data-error. Read either with a locator.

const worker = new Worker('/harness/harness.js', { type: 'module' });
const pending = new Map();
let nextId = 1;

function failAll(error) {
  for (const { reject } of pending.values()) reject(error);
  pending.clear();
}

worker.addEventListener('message', (event) => {
  const { id, ok, value, error } = event.data ?? {};
  const waiter = pending.get(id);
  if (!waiter) return;
  pending.delete(id);
  if (ok) waiter.resolve(value);
  else waiter.reject(new Error(error));
});
worker.addEventListener('error', (event) => {
  event.preventDefault();
  const text = `harness worker error: ${event.message || 'its script could not be loaded'}`;
  document.getElementById('ready').dataset.error = text;
  failAll(new Error(text));
});

function send(msg) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    worker.postMessage({ ...msg, id });
  });
}

function fromBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function toBase64(bytes) {
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

function decodeInputs(msg) {
  if (!Array.isArray(msg.inputs)) return msg;
  const inputs = msg.inputs.map((item) => {
    const data = item.data;
    if (typeof data === 'string') return { ...item, data: fromBase64(data) };
    if (Array.isArray(data)) return { ...item, data: Uint8Array.from(data) };
    return item;
  });
  return { ...msg, inputs };
}

function encodeOutputs(value) {
  if (!value || !Array.isArray(value.outputs)) return value;
  const outputs = value.outputs.map((out) => ({ ...out, data: toBase64(out.data) }));
  return { ...value, outputs };
}

async function call(msg, { b64 = false } = {}) {
  const value = await send(decodeInputs(msg));
  return b64 ? encodeOutputs(value) : value;
}

const ready = send({ cmd: 'ping' }).then(() => {
  document.getElementById('ready').dataset.ready = '1';
});

async function runQueryCalls() {
  const text = new URLSearchParams(location.search).get('calls');
  if (!text) return;
  const result = document.getElementById('result');
  try {
    await ready;
    const values = [];
    for (const msg of JSON.parse(text)) values.push(await call(msg, { b64: true }));
    result.dataset.value = JSON.stringify(values);
  } catch (error) {
    result.dataset.error = String(error?.message ?? error);
  }
}

runQueryCalls();

window.harness = {
  call,
  ready,
  manifest: fetch('/harness/manifest.json').then((r) => r.json()),
};
