// What a unit's job computes, said to the volunteer before its inputs download: for an
// embedding job the model and for whom (asked of the coordinator once per job, which tells
// only a worker holding one of the job's leases), and how many bytes of the job's inputs
// (the model's weights) are not yet in this browser's Cache API.

import { expectedSize } from './blobs.js';

const KEPT = 64; // job descriptions remembered, oldest dropped first

export class JobAbout {
  // blobs: the worker's BlobStore; auth(): its Authorization header for the coordinator.
  constructor(blobs, auth) {
    this.blobs = blobs;
    this.auth = auth;
    this.known = new Map();
  }

  // { job, kernel, model, name, owner, texts, fetchBytes, totalBytes } for the page.
  async describe(lease, spec) {
    // Other kernels' inputs are a unit's own few kilobytes: not worth a look in the cache.
    if (spec.kernel !== 'embed') return { job: lease.job, kernel: spec.kernel };
    const inputs = Object.values(spec.inputs ?? {});
    const totalBytes = inputs.reduce((n, ref) => n + expectedSize(ref), 0);
    const cached = await Promise.all(inputs.map((ref) => this.blobs.has(ref.digest).catch(() => false)));
    const fetchBytes = inputs.reduce((n, ref, i) => (cached[i] ? n : n + expectedSize(ref)), 0);
    const about = await this.embedding(lease.job, spec.key);
    return { job: lease.job, kernel: spec.kernel, ...about, fetchBytes, totalBytes };
  }

  async embedding(job, key) {
    const id = key || `job ${job}`;
    if (!this.known.has(id)) {
      this.known.set(id, await this.ask(job));
      while (this.known.size > KEPT) this.known.delete(this.known.keys().next().value);
    }
    return this.known.get(id);
  }

  async ask(job) {
    // Saying less is better than failing the unit: without an answer the page names the kernel.
    try {
      const url = new URL(`/api/v1/embeddings/${job}/about`, this.blobs.origin);
      const response = await fetch(url, { headers: { authorization: this.auth() } });
      if (!response.ok) return null;
      const { model, name, owner, texts } = await response.json();
      return { model, name, owner, texts };
    } catch {
      return null;
    }
  }
}
