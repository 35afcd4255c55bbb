// The picture of a mandelbrot job, assembled from the tiles validated so far. Fetched with
// the token as a blob and shown as a data: URL: the CSP's img-src allows data: but not blob:.

import { apiBlob } from './api.js';
import { $, setHidden, setText } from './dom.js';

const REFRESH_MS = 2000;

function dataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

export class Picture {
  constructor() {
    this.img = $('picture');
    this.job = null; // the job shown, as in the latest snapshot
    this.chosen = false; // picked by the operator (else the first running one is shown)
    this.timer = null;
    this.loading = false;
    this.fetchedState = null; // the job state at the last fetch
    this.img.addEventListener('load', () => {
      this.img.classList.toggle('pixelated', this.img.naturalWidth < this.img.clientWidth);
    });
  }

  // The operator clicked a job with a picture.
  select(job) {
    this.chosen = true;
    this.#show(job);
  }

  // Every snapshot: follow the shown job's state. Until the operator picks one, show a
  // running picture job, else keep the one shown, else the latest job with a picture.
  update(jobs = []) {
    const current = this.job && jobs.find((j) => j.id === this.job.id);
    if (current) this.job = current;
    if (!this.chosen && current?.state !== 'running') {
      const pick =
        jobs.find((j) => j.picture && j.state === 'running') ??
        current ??
        jobs.find((j) => j.picture);
      if (pick && pick.id !== this.job?.id) this.#show(pick);
    }
    this.#caption();
  }

  reset() {
    clearTimeout(this.timer);
    this.job = null;
    this.chosen = false;
    this.img.removeAttribute('src');
    setHidden(this.img, true);
    setHidden($('picture-empty'), false);
    setText($('picture-caption'), '');
  }

  selectedId() {
    return this.job?.id ?? null;
  }

  #show(job) {
    const changed = job.id !== this.job?.id;
    this.job = job;
    if (changed) {
      this.fetchedState = null;
      this.img.alt = `Picture of job ${job.id} (${job.name}) so far`;
    }
    this.#caption();
    clearTimeout(this.timer);
    this.#fetch();
  }

  async #fetch() {
    const job = this.job;
    if (!job || this.loading) return;
    this.loading = true;
    try {
      const blob = await apiBlob(`/api/v1/jobs/${encodeURIComponent(job.id)}/picture.png`);
      const url = await dataUrl(blob);
      if (this.job?.id !== job.id) return; // another job was picked meanwhile
      this.img.src = url;
      this.fetchedState = job.state;
      setHidden(this.img, false);
      setHidden($('picture-empty'), true);
    } catch (error) {
      if (this.job?.id === job.id && !this.img.src) {
        setText($('picture-empty'), `No picture for job ${job.id} yet (${error.detail ?? error}).`);
      }
    } finally {
      this.loading = false;
      this.#schedule();
    }
  }

  // Refresh while the job runs; once it stopped, one last fetch shows its final state.
  #schedule() {
    clearTimeout(this.timer);
    const job = this.job;
    if (!job) return;
    const moving = job.state === 'running' || this.fetchedState !== job.state;
    if (moving) this.timer = setTimeout(() => this.#fetch(), REFRESH_MS);
    else this.timer = setTimeout(() => this.#schedule(), REFRESH_MS);
  }

  #caption() {
    const job = this.job;
    if (!job) return;
    const done = job.counts?.done ?? 0;
    setText(
      $('picture-caption'),
      `Job ${job.id} · ${job.name} · ${job.state} · ${done} of ${job.units} tiles validated`,
    );
  }
}
