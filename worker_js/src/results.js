// A finished unit as the coordinator's ResultItem: outputs named by sha256, inline as
// base64 when small, otherwise uploaded as blobs first.

import { base64, hex, sha256 } from './digest.js';

const MAX_ERROR_CHARS = 4000;
const UPLOAD_TRIES = 3;

export function errorItem(lease, error, ms = 0, kind = '') {
  let text = String(error);
  if (text.length > MAX_ERROR_CHARS) text = `${text.slice(0, MAX_ERROR_CHARS - 3)}...`;
  const item = { lease, error: text, elapsed_ms: round(ms) };
  // 'deterministic': the shader failed to compile or validate (runtime/errors.py); a claim the
  // coordinator confirms before it fails anything.
  if (kind === 'deterministic') item.error_kind = kind;
  return item;
}

function round(ms) {
  return Math.round(ms * 1000) / 1000;
}

async function upload(blobs, digest, data, auth) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await blobs.put(digest, data, auth);
    } catch (e) {
      if (attempt >= UPLOAD_TRIES) throw e;
      await new Promise((resolve) => setTimeout(resolve, 500 * attempt));
    }
  }
}

// outputs: [{name, dtype, shape, data: Uint8Array}]; welcome gives max_inline.
export async function outputsItem(lease, outputs, ms, { blobs, welcome, auth }) {
  const named = {};
  for (const out of outputs) {
    const digest = hex(await sha256(out.data));
    const entry = { digest, dtype: out.dtype, shape: Array.from(out.shape) };
    if (out.data.length <= welcome.max_inline) {
      entry.data = base64(out.data);
    } else {
      await upload(blobs, digest, out.data, auth);
    }
    named[out.name] = entry;
  }
  return { lease, outputs: named, elapsed_ms: round(ms) };
}
