// The live snapshot stream: server-sent events read from a fetch() body (EventSource cannot
// send an Authorization header). Reconnects with backoff when it drops or goes quiet.

import { authHeaders, problemOf } from './api.js';

const BACKOFF_S = [1, 2, 4, 8, 15];
// Snapshots come about once a second; this long without a byte means a dead connection.
const QUIET_MS = 10_000;

export class SnapshotStream {
  // url(): the stream URL for the current query. Callbacks: onSnapshot(snapshot),
  // onState(state, {retryAt}) with state connecting|open|live|reconnecting|stopped,
  // onAuthFailure(status, error).
  constructor({ url, onSnapshot, onState, onAuthFailure }) {
    this.url = url;
    this.onSnapshot = onSnapshot;
    this.onState = onState;
    this.onAuthFailure = onAuthFailure;
    this.generation = 0;
    this.controller = null;
    this.retryTimer = null;
    this.failures = 0;
  }

  // Opens a stream now, replacing any open one (the query changed, or a first start).
  restart() {
    this.#close();
    const generation = ++this.generation;
    this.#run(generation);
  }

  stop() {
    this.#close();
    this.generation++;
    this.onState('stopped', {});
  }

  #close() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.controller?.abort();
    this.controller = null;
  }

  async #run(generation) {
    const controller = new AbortController();
    this.controller = controller;
    let quiet = null;
    const heard = () => {
      clearTimeout(quiet);
      quiet = setTimeout(() => controller.abort(new Error('no data for 10 s')), QUIET_MS);
    };
    const current = () => generation === this.generation;
    try {
      if (this.failures === 0) this.onState('connecting', {});
      heard();
      const response = await fetch(this.url(), {
        headers: authHeaders({ Accept: 'text/event-stream' }),
        signal: controller.signal,
        cache: 'no-store',
      });
      if (!current()) return;
      if (response.status === 401 || response.status === 403) {
        const error = await problemOf(response);
        if (current()) {
          this.stop();
          this.onAuthFailure(response.status, error);
        }
        return;
      }
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      this.onState('open', {});
      await this.#read(response.body, heard, current);
      throw new Error('the stream ended');
    } catch (error) {
      if (!current()) return;
      this.#retry(generation, error);
    } finally {
      clearTimeout(quiet);
    }
  }

  async #read(body, heard, current) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done || !current()) return;
      heard();
      buffer = (buffer + value).replace(/\r\n/g, '\n');
      let end = buffer.indexOf('\n\n');
      while (end >= 0) {
        this.#dispatch(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        end = buffer.indexOf('\n\n');
      }
    }
  }

  #dispatch(block) {
    let event = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (!line || line.startsWith(':')) continue; // comments keep the connection warm
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'event') event = value;
      else if (field === 'data') data.push(value);
    }
    if (!data.length || (event !== 'snapshot' && event !== 'message')) return;
    let snapshot;
    try {
      snapshot = JSON.parse(data.join('\n'));
    } catch (error) {
      console.warn('console: unreadable snapshot', error);
      return;
    }
    this.failures = 0;
    this.onState('live', {});
    this.onSnapshot(snapshot);
  }

  #retry(generation, error) {
    const delay = BACKOFF_S[Math.min(this.failures, BACKOFF_S.length - 1)];
    this.failures++;
    console.info(`console: stream dropped (${error?.message ?? error}); retry in ${delay} s`);
    this.onState('reconnecting', { retryAt: Date.now() + delay * 1000 });
    this.retryTimer = setTimeout(() => {
      if (generation === this.generation) this.#run(generation);
    }, delay * 1000);
  }
}
