// Finds out, without computing anything, whether this browser can give us a WebGPU adapter.

// Some broken drivers never answer requestAdapter(); better to say so than to wait forever.
const PROBE_TIMEOUT_MS = 10_000;

function withTimeout(promise, ms) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer after ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/**
 * @returns {Promise<{ok: true, vendor: string, architecture: string, description: string}
 *                  | {ok: false, reason: 'insecure'|'no-api'|'no-adapter'|'failed', message?: string}>}
 */
export async function probeGpu() {
  // Browsers hide navigator.gpu on insecure origins, so say that first: it is the fixable cause.
  if (!globalThis.isSecureContext) return { ok: false, reason: 'insecure' };
  if (!navigator.gpu) return { ok: false, reason: 'no-api' };
  let adapter;
  try {
    adapter = await withTimeout(navigator.gpu.requestAdapter(), PROBE_TIMEOUT_MS);
  } catch (error) {
    return { ok: false, reason: 'failed', message: String(error?.message ?? error) };
  }
  if (!adapter) return { ok: false, reason: 'no-adapter' };
  const info = await adapterInfo(adapter);
  return {
    ok: true,
    vendor: info.vendor ?? '',
    architecture: info.architecture ?? '',
    description: info.description ?? '',
  };
}

// adapter.info is the standard; Chrome before 127 only had requestAdapterInfo().
async function adapterInfo(adapter) {
  if (adapter.info) return adapter.info;
  if (typeof adapter.requestAdapterInfo === 'function') {
    try {
      return await adapter.requestAdapterInfo();
    } catch {
      // Fall through: an unnamed GPU is still a GPU.
    }
  }
  return {};
}

/** "nvidia, ampere (NVIDIA GeForce RTX 3060)", or a fallback when the browser names nothing. */
export function describeGpu({ vendor, architecture, description }) {
  const main = [vendor, architecture].filter(Boolean).join(', ');
  if (main && description) return `${main} (${description})`;
  return main || description || 'a GPU (your browser does not name it)';
}
