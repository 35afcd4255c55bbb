// Input blobs by digest, kept in the Cache API so a reload or a later visit does not fetch
// them again. Every blob is checked against its size and sha256 before use: the cache and
// the network are both untrusted.

import { hex, sha256 } from './digest.js';

const CACHE = 'tabgrid-blobs-v1';
const MAX_CACHED = 2000; // blobs kept across visits, oldest dropped first
const TRIM_EVERY = 50; // downloads between trims
// Verified blobs also stay in memory, newest last, up to this many bytes: a model's weights
// (91 MB for MiniLM) are then read from the Cache API and hashed once, not once per unit.
const MEMORY_BYTES = 256 * 1024 * 1024;
const ITEMSIZE = { float32: 4, int32: 4, uint32: 4, uint8: 1, float64: 8, int64: 8 };

export class BlobError extends Error {}

export function expectedSize(ref) {
  return ref.shape.reduce((n, d) => n * d, 1) * ITEMSIZE[ref.dtype];
}

async function openCache() {
  // The Cache API is missing in some private modes; then every blob is fetched.
  try {
    return await caches.open(CACHE);
  } catch {
    return null;
  }
}

async function verified(ref, buffer) {
  const bytes = new Uint8Array(buffer);
  if (bytes.length !== expectedSize(ref)) {
    throw new BlobError(`blob ${ref.digest} has ${bytes.length} bytes, its shape needs ${expectedSize(ref)}`);
  }
  const actual = hex(await sha256(bytes));
  if (actual !== ref.digest) throw new BlobError(`blob ${ref.digest} arrived with sha256 ${actual}`);
  return bytes;
}

// The Authorization header of a worker's blob requests. The coordinator serves a worker only
// the inputs of the units it holds leases on, and stores only their outputs.
export function workerAuth(identity) {
  if (!identity?.workerId || !identity?.secret) return null;
  return `Worker ${identity.workerId}:${identity.secret}`;
}

export class BlobStore {
  // identity() is the worker's current { workerId, secret }: it changes when the coordinator
  // gives a new one.
  constructor(origin, identity = () => null) {
    this.origin = origin;
    this.identity = identity;
    this.cache = openCache();
    this.pending = new Map();
    this.stored = 0;
    this.memory = new Map(); // digest -> verified bytes, least recently used first
    this.memoryBytes = 0;
  }

  url(digest) {
    return new URL(`/api/v1/blobs/${digest}`, this.origin).href;
  }

  // Whether the Cache API holds the blob (unchecked: load checks it on use).
  async has(digest) {
    const cache = await this.cache;
    return Boolean(cache && (await cache.match(this.url(digest))));
  }

  // The blob's bytes; concurrent requests for one digest share one download.
  get(ref) {
    const held = this.memory.get(ref.digest);
    if (held) {
      this.memory.delete(ref.digest);
      this.memory.set(ref.digest, held);
      return Promise.resolve(held);
    }
    let promise = this.pending.get(ref.digest);
    if (!promise) {
      promise = this.load(ref)
        .then((bytes) => this.remember(ref.digest, bytes))
        .finally(() => this.pending.delete(ref.digest));
      this.pending.set(ref.digest, promise);
    }
    return promise;
  }

  remember(digest, bytes) {
    if (bytes.length > MEMORY_BYTES) return bytes;
    this.memory.set(digest, bytes);
    this.memoryBytes += bytes.length;
    for (const [old, data] of this.memory) {
      if (this.memoryBytes <= MEMORY_BYTES) break;
      this.memory.delete(old);
      this.memoryBytes -= data.length;
    }
    return bytes;
  }

  async load(ref) {
    const cache = await this.cache;
    const url = this.url(ref.digest);
    const hit = cache && (await cache.match(url));
    if (hit) {
      try {
        return await verified(ref, await hit.arrayBuffer());
      } catch {
        await cache.delete(url); // corrupt entry: fetch it again
      }
    }
    const auth = workerAuth(this.identity());
    const response = await fetch(url, { headers: auth ? { authorization: auth } : {} });
    if (!response.ok) throw new BlobError(`GET blob ${ref.digest}: HTTP ${response.status}`);
    const bytes = await verified(ref, await response.arrayBuffer());
    if (cache) {
      // A full quota only costs a later download.
      cache
        .put(url, new Response(bytes, { headers: { 'content-type': 'application/octet-stream' } }))
        .then(() => this.trim(cache))
        .catch(() => {});
    }
    return bytes;
  }

  // Keeps the newest MAX_CACHED blobs: a long-time volunteer's disk must not fill up.
  async trim(cache) {
    if (++this.stored % TRIM_EVERY !== 0) return;
    const keys = await cache.keys();
    for (const request of keys.slice(0, Math.max(0, keys.length - MAX_CACHED))) {
      await cache.delete(request);
    }
  }

  async put(digest, bytes, auth) {
    const response = await fetch(this.url(digest), {
      method: 'PUT',
      headers: { authorization: auth, 'content-type': 'application/octet-stream' },
      body: bytes,
    });
    if (response.status !== 200 && response.status !== 201) {
      throw new BlobError(`PUT blob ${digest}: HTTP ${response.status}: ${(await response.text()).slice(0, 300)}`);
    }
  }
}
