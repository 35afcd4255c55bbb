// tabgrid's in-browser harness: a module Web Worker that loads Pyodide and the tabgrid runtime
// exactly as the real browser worker does (worker_js/src/runtime.js), runs kernels on this
// tab's WebGPU, and times things. harness.html's page.js starts it and relays messages.
//
// Serve it with e2e/harness_server.py (same CSP as the coordinator) and open
// /harness/harness.html. From a test, in a context with bypass_csp=True:
//   value = page.evaluate("m => window.harness.call(m)", msg)          # rejects on error
//   value = page.evaluate("m => window.harness.call(m, {b64: true})", msg)  # outputs base64
// Input data may be given as base64 strings or byte lists (page.js converts them); without
// page.evaluate, harness.html?calls=[...] works under the real CSP (see page.js).
// Underneath: request {id, cmd, ...}, reply {id, ok: true, value} or {id, ok: false, error}.
// Commands run one at a time, in order. Times are ms from performance.now() in this worker.
//
//   {cmd: 'ping'}    -> 'pong'
//   {cmd: 'bare'}    -> {ms, importMs}: import pyodide.mjs + loadPyodide({indexURL,
//                       lockFileURL, fullStdLib: false}), no packages. Each call makes a new
//                       Pyodide; only the first in a worker pays for the module import, so
//                       time a bare load once per fresh page.
//   {cmd: 'load'}    -> {ms, importMs, pyodideMs, packageMs, moduleMs}: the real worker's
//                       loadRuntime (the same, then loadPackage('tabgrid-runtime') and
//                       pyimport('tabgrid.runtime.browser')); later commands use this runtime.
//                       Called again, it reloads.
//   {cmd: 'adapter'} -> {vendor, architecture, description} of the runtime's GPU adapter.
//   {cmd: 'run', kernel, params = {}, inputs: [{name, dtype, shape, data: Uint8Array}]}
//                    -> browser.run's result, as the real worker gets it:
//                       {outputs: [{name, dtype, shape, data: Uint8Array}], ms} or {error, ms}.
//                       Loads the runtime first if no 'load' came before.
//   {cmd: 'python', code} -> the value of `await pyodide.runPythonAsync(code)`, converted to
//                       JS (dicts become plain objects); for checks and profiling.
//   {cmd: 'bench-matmul', n = 64, units = 200, round = 10, warmup = 20, detail = false,
//    gpus = []}
//                    -> per-unit times of one n x n @ n x n matmul unit, two ways in this same
//                       worker: py = browser.run('matmul', ...) as the real worker calls it;
//                       js = the same matmul.wgsl from plain JS (pipeline made once; per unit:
//                       buffers created and filled, bind group, one encoder with the dispatch
//                       and the copy to a staging buffer, mapAsync, read back, destroy). Both
//                       warm up first, then alternate in rounds of `round` units (py js js py
//                       ..., more sides shuffled), so drift hits all alike. detail: true adds
//                       two sides: mirror, JS making gpu_js.JsGpu's WebGPU calls in its order
//                       (one encoder and submit, one error scope), and pyCall, an async Python no-op called
//                       with browser.run's arguments (the cost of crossing into Python and
//                       back). gpus: names
//                       in a Python dict `harness_gpus` (made by an earlier 'python' call) of
//                       JsGpu-like objects; each becomes a side 'py:<name>' that runs
//                       browser.run with browser.gpu swapped to it (alternatives to measure
//                       against the real one in the same rounds), its stats with a ratio.
//                       Value: {n, units, round, warmup, py, js, [mirror, pyCall], pyInsideMs
//                       (browser.run's own ms), ratio: py.median / js.median, [mirrorRatio],
//                       diffs: {side: max |difference| of its output from py's}, maxAbsDiff
//                       (the largest), maxRefDiff (py vs a CPU product)}; py, js, ...:
//                       {median, mean, p10, p90, min, max} in ms per unit.

const post = (msg) => self.postMessage(msg);

let manifestPromise = null;
let runtime = null; // {pyodide, browser}

function manifest() {
  manifestPromise ??= fetch('/harness/manifest.json').then((r) => {
    if (!r.ok) throw new Error(`GET /harness/manifest.json: HTTP ${r.status}`);
    return r.json();
  });
  return manifestPromise;
}

async function pyodideURLs() {
  const m = await manifest();
  const origin = self.location.origin;
  return {
    indexURL: new URL(m.pyodide_index, origin).href,
    lockFileURL: new URL(m.pyodide_lock, origin).href,
  };
}

async function startPyodide() {
  const { indexURL, lockFileURL } = await pyodideURLs();
  const t0 = performance.now();
  const { loadPyodide } = await import(new URL('pyodide.mjs', indexURL).href);
  const t1 = performance.now();
  const pyodide = await loadPyodide({ indexURL, lockFileURL, fullStdLib: false });
  const t2 = performance.now();
  return { pyodide, t0, importMs: t1 - t0, pyodideMs: t2 - t1, t2 };
}

async function bare() {
  const { t0, t2, importMs } = await startPyodide();
  return { ms: t2 - t0, importMs };
}

async function load() {
  const { pyodide, t0, t2, importMs, pyodideMs } = await startPyodide();
  await pyodide.loadPackage('tabgrid-runtime', { messageCallback: () => {} });
  const t3 = performance.now();
  const browser = pyodide.pyimport('tabgrid.runtime.browser');
  const t4 = performance.now();
  runtime = { pyodide, browser };
  return { ms: t4 - t0, importMs, pyodideMs, packageMs: t3 - t2, moduleMs: t4 - t3 };
}

async function ensureRuntime() {
  if (!runtime) await load();
  return runtime;
}

// The real worker's Runtime.run: params travel as JSON text.
function runUnit(rt, kernel, params, inputs) {
  return rt.browser.run(kernel, JSON.stringify(params ?? {}), inputs);
}

function toJs(value) {
  if (value && typeof value.toJs === 'function') {
    const converted = value.toJs({ dict_converter: Object.fromEntries });
    value.destroy?.();
    return converted;
  }
  return value;
}

async function python(code) {
  const rt = await ensureRuntime();
  return toJs(await rt.pyodide.runPythonAsync(code));
}

async function adapter() {
  const rt = await ensureRuntime();
  return toJs(await rt.browser.adapter());
}

// ---- the matmul benchmark -------------------------------------------------------------------

const STORAGE = () => GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
const UNIFORM = () => GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST;
const STAGING = () => GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST;
const TILE = 16;

// matmul.wgsl driven from JS, as a hand-written WebGPU program would.
class JsMatmul {
  static async create(shader) {
    const adapter = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) throw new Error('WebGPU found no adapter');
    const device = await adapter.requestDevice();
    const module = device.createShaderModule({ code: shader });
    const pipeline = await device.createComputePipelineAsync({
      layout: 'auto',
      compute: { module, entryPoint: 'main' },
    });
    return new JsMatmul(device, pipeline);
  }

  constructor(device, pipeline) {
    this.device = device;
    this.pipeline = pipeline;
    this.layout = pipeline.getBindGroupLayout(0);
  }

  upload(bytes, usage, unit = 4) {
    const size = Math.max(unit, Math.ceil(bytes.byteLength / unit) * unit);
    const buffer = this.device.createBuffer({ size, usage, mappedAtCreation: true });
    new Uint8Array(buffer.getMappedRange(), 0, bytes.byteLength).set(bytes);
    buffer.unmap();
    return buffer;
  }

  // The exact WebGPU call sequence of gpu_js.JsGpu (for telling the cost of that sequence
  // from the cost of driving it from Python): a validation error scope around the dispatch,
  // the dispatch and the copy in separate submits, the scope popped before mapAsync.
  async runMirror(m, k, n, aBytes, bBytes) {
    const device = this.device;
    const size = m * n * 4;
    const a = this.upload(aBytes, STORAGE());
    const b = this.upload(bBytes, STORAGE());
    const c = device.createBuffer({ size, usage: STORAGE() });
    const dims = this.upload(new Uint8Array(new Uint32Array([m, n, k, 0]).buffer), UNIFORM(), 16);
    try {
      device.pushErrorScope('validation');
      const encoder = device.createCommandEncoder();
      const group = device.createBindGroup({
        layout: this.layout,
        entries: [a, b, c, dims].map((buffer, binding) => ({ binding, resource: { buffer } })),
      });
      const pass = encoder.beginComputePass();
      pass.setPipeline(this.pipeline);
      pass.setBindGroup(0, group);
      pass.dispatchWorkgroups(Math.ceil(n / TILE), Math.ceil(m / TILE), 1);
      pass.end();
      const staging = device.createBuffer({ size, usage: STAGING() });
      try {
        // As JsGpu: the dispatch and the copy in one encoder and one submit, one error
        // scope around both, awaited after the map.
        encoder.copyBufferToBuffer(c, 0, staging, 0, size);
        device.queue.submit([encoder.finish()]);
        const scope = device.popErrorScope();
        await staging.mapAsync(GPUMapMode.READ);
        const error = await scope;
        if (error) throw new Error(`dispatch: ${error.message}`);
        const out = new Uint8Array(staging.getMappedRange(0, size)).slice();
        staging.unmap();
        return out;
      } finally {
        staging.destroy();
      }
    } finally {
      for (const buffer of [a, b, c, dims]) buffer.destroy();
    }
  }

  async run(m, k, n, aBytes, bBytes) {
    const device = this.device;
    const size = m * n * 4;
    const a = this.upload(aBytes, STORAGE());
    const b = this.upload(bBytes, STORAGE());
    const c = device.createBuffer({ size, usage: STORAGE() });
    const dims = this.upload(new Uint8Array(new Uint32Array([m, n, k, 0]).buffer), UNIFORM(), 16);
    const staging = device.createBuffer({ size, usage: STAGING() });
    try {
      const group = device.createBindGroup({
        layout: this.layout,
        entries: [a, b, c, dims].map((buffer, binding) => ({ binding, resource: { buffer } })),
      });
      const encoder = device.createCommandEncoder();
      const pass = encoder.beginComputePass();
      pass.setPipeline(this.pipeline);
      pass.setBindGroup(0, group);
      pass.dispatchWorkgroups(Math.ceil(n / TILE), Math.ceil(m / TILE), 1);
      pass.end();
      encoder.copyBufferToBuffer(c, 0, staging, 0, size);
      device.queue.submit([encoder.finish()]);
      await staging.mapAsync(GPUMapMode.READ);
      const out = new Uint8Array(staging.getMappedRange(0, size)).slice();
      staging.unmap();
      return out;
    } finally {
      for (const buffer of [a, b, c, dims, staging]) buffer.destroy();
    }
  }
}

// For profiling code run through 'python': `from js import JsMatmul, harnessDispatchRead`.
self.JsMatmul = JsMatmul;

// One unit's dispatch and read-back in a single call from Python (a JsGpu variant that
// crosses into JS once per unit instead of once per WebGPU call): what batching would save.
self.harnessDispatchRead = async (device, pipeline, layout, buffers, groups, source, size) => {
  device.pushErrorScope('validation');
  const group = device.createBindGroup({
    layout,
    entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
  const staging = device.createBuffer({ size: source.size, usage: STAGING() });
  try {
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(...groups);
    pass.end();
    encoder.copyBufferToBuffer(source, 0, staging, 0, source.size);
    device.queue.submit([encoder.finish()]);
    const scope = device.popErrorScope();
    const mapped = staging.mapAsync(GPUMapMode.READ);
    const error = await scope;
    await mapped;
    if (error) throw new Error(`dispatch: ${error.message}`);
    const out = new Uint8Array(staging.getMappedRange(0, size)).slice();
    staging.unmap();
    return out;
  } finally {
    staging.destroy();
  }
};

// A small seeded generator: the same shuffles on every run.
function lcg(seed) {
  let x = seed >>> 0;
  return () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x / 2 ** 32;
  };
}

function shuffled(items, random) {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

function randomMatrix(n, seed) {
  // The same inputs on every run, values in [-1, 1).
  const next = lcg(seed);
  const values = new Float32Array(n * n);
  for (let i = 0; i < values.length; i++) values[i] = next() * 2 - 1;
  return values;
}

function cpuMatmul(a, b, n) {
  const c = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let p = 0; p < n; p++) {
      const x = a[i * n + p];
      for (let j = 0; j < n; j++) c[i * n + j] += x * b[p * n + j];
    }
  }
  return c;
}

function maxAbsDiff(x, y) {
  let worst = 0;
  for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i] - y[i]));
  return worst;
}

function stats(values) {
  const sorted = [...values].sort((p, q) => p - q);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  const mean = sorted.reduce((s, v) => s + v, 0) / sorted.length;
  return { median, mean, p10: at(0.1), p90: at(0.9), min: sorted[0], max: sorted.at(-1) };
}

async function benchMatmul(options) {
  const { n = 64, units = 200, round = 10, warmup = 20, detail = false, gpus = [] } = options;
  const rt = await ensureRuntime();
  const kernelModule = rt.pyodide.pyimport('tabgrid.kernels.matmul');
  const shader = String(kernelModule.SHADER);
  kernelModule.destroy();
  const js = await JsMatmul.create(shader);
  const a = randomMatrix(n, 1);
  const b = randomMatrix(n, 2);
  const aBytes = new Uint8Array(a.buffer);
  const bBytes = new Uint8Array(b.buffer);
  const inputs = [
    { name: 'a', dtype: 'float32', shape: [n, n], data: aBytes },
    { name: 'b', dtype: 'float32', shape: [n, n], data: bBytes },
  ];
  const pyInside = [];
  const runPy = async (record) => {
    const result = await runUnit(rt, 'matmul', {}, inputs);
    if (result.error !== undefined) throw new Error(`browser.run failed: ${result.error}`);
    if (record) pyInside.push(result.ms);
    return result.outputs[0].data;
  };
  const sides = [
    { name: 'py', run: runPy, times: [] },
    { name: 'js', run: () => js.run(n, n, n, aBytes, bBytes), times: [] },
  ];
  // Variants of JsGpu, each run as browser.gpu for its own units.
  const original = gpus.length ? rt.browser.gpu : null;
  const variants = rt.pyodide.globals.get('harness_gpus');
  if (gpus.length && !variants) throw new Error('gpus given, but no harness_gpus dict in Python');
  const swapped = (gpu, inside) => async (record) => {
    rt.browser.gpu = gpu;
    try {
      return await runPy(record && inside);
    } finally {
      rt.browser.gpu = original;
    }
  };
  for (const name of gpus) {
    if (!variants.has(name)) throw new Error(`harness_gpus has no ${JSON.stringify(name)}`);
    sides.push({ name: `py:${name}`, run: swapped(variants.get(name), false), times: [] });
  }
  if (original) sides[0].run = swapped(original, true);
  let noop = null;
  if (detail) {
    sides.push({ name: 'mirror', run: () => js.runMirror(n, n, n, aBytes, bBytes), times: [] });
    // What calling into Python costs by itself: an async no-op taking browser.run's arguments.
    noop = rt.pyodide.runPython('async def _harness_noop(*args):\n    return None\n_harness_noop');
    const call = () => noop('matmul', '{}', inputs);
    sides.push({ name: 'pyCall', run: call, times: [], noOutput: true });
  }

  const outputs = new Map();
  for (const side of sides) {
    const out = await side.run(false);
    if (!side.noOutput) outputs.set(side.name, new Float32Array(out.slice().buffer));
  }
  for (let i = 1; i < warmup; i++) for (const side of sides) await side.run(false);
  // Rounds in alternating order (py js, js py, py js ...; more sides: shuffled each turn, as a
  // rotation would keep each side's predecessor), so that no side always runs right after
  // another, and slow spells of this noisy machine hit every side alike.
  const random = lcg(7);
  for (let turn = 0; sides.some((side) => side.times.length < units); turn++) {
    const alternate = turn % 2 ? [sides[1], sides[0]] : sides;
    const order = sides.length === 2 ? alternate : shuffled(sides, random);
    for (const side of order) {
      for (let i = 0; i < round && side.times.length < units; i++) {
        const t0 = performance.now();
        await side.run(true);
        side.times.push(performance.now() - t0);
      }
    }
  }
  js.device.destroy();
  noop?.destroy();
  variants?.destroy();
  original?.destroy();
  const value = { n, units, round, warmup };
  for (const side of sides) value[side.name] = stats(side.times);
  value.pyInsideMs = stats(pyInside);
  value.ratio = value.py.median / value.js.median;
  if (detail) value.mirrorRatio = value.mirror.median / value.js.median;
  for (const name of gpus) value[`py:${name}`].ratio = value[`py:${name}`].median / value.js.median;
  const pyOut = outputs.get('py');
  value.diffs = {};
  for (const [name, out] of outputs) if (name !== 'py') value.diffs[name] = maxAbsDiff(pyOut, out);
  value.maxAbsDiff = Math.max(...Object.values(value.diffs));
  value.maxRefDiff = maxAbsDiff(pyOut, cpuMatmul(a, b, n));
  return value;
}

// ---- dispatch -------------------------------------------------------------------------------

const COMMANDS = {
  ping: async () => 'pong',
  bare,
  load,
  adapter,
  run: async (msg) => runUnit(await ensureRuntime(), msg.kernel, msg.params, msg.inputs),
  python: (msg) => python(msg.code),
  'bench-matmul': (msg) => benchMatmul(msg),
};

// One command at a time, in arrival order: timings must not overlap.
let queue = Promise.resolve();

self.onmessage = (event) => {
  const msg = event.data ?? {};
  queue = queue.then(async () => {
    const command = COMMANDS[msg.cmd];
    try {
      if (!command) throw new Error(`unknown command ${JSON.stringify(msg.cmd)}`);
      post({ id: msg.id, ok: true, value: await command(msg) });
    } catch (error) {
      const text = `${error?.name ?? 'Error'}: ${error?.message ?? error}`;
      post({ id: msg.id, ok: false, error: text });
    }
  });
};
