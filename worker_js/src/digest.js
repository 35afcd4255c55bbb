// sha256 and base64 for results: the coordinator names blobs by sha256 and takes small
// outputs inline as base64 (msgspec's encoding of bytes).

export async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
}

export function hex(bytes) {
  let out = '';
  for (const b of bytes) out += b.toString(16).padStart(2, '0');
  return out;
}

export function base64(bytes) {
  // String.fromCharCode on chunks: one call per byte would be slow, one call for all
  // bytes overflows the argument limit.
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}
