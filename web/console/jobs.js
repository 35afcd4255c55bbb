// The jobs table: state, an editable priority, progress split by unit state, rate and ETA,
// and pause / resume / cancel. Rows are updated in place so an edited priority survives.

import { $, el, setAttr, setHidden, setText, syncChildren } from './dom.js';
import * as fmt from './format.js';

// Bar order: finished work on the left, waiting work on the right.
export const UNIT_STATES = ['done', 'validating', 'running', 'pending', 'failed', 'cancelled'];
const ACTIONS = {
  pause: (job) => job.state === 'running',
  resume: (job) => job.state === 'paused',
  cancel: (job) => job.state === 'running' || job.state === 'paused',
};
const FINISHED = new Set(['done', 'failed', 'cancelled']);

export class JobsTable {
  // onAction(job, action, value): action is pause|resume|cancel|priority (value: the new
  // priority). onSelect(job): a row of a job with a picture was clicked.
  constructor({ onAction, onSelect }) {
    this.tbody = $('jobs');
    this.empty = $('jobs-empty');
    this.onAction = onAction;
    this.onSelect = onSelect;
    this.jobs = new Map();
    this.selected = null;
    this.tbody.addEventListener('click', (event) => this.#click(event));
    // An edited priority is marked and kept until Set (or Escape), whatever snapshots say.
    this.tbody.addEventListener('input', (event) => {
      if (event.target.matches('input.priority')) event.target.dataset.dirty = '1';
    });
    this.tbody.addEventListener('keydown', (event) => {
      const input = event.target;
      if (!input.matches('input.priority')) return;
      if (event.key === 'Enter') {
        input.closest('tr').querySelector('button[data-action="priority"]').click();
      } else if (event.key === 'Escape') {
        delete input.dataset.dirty;
        input.value = this.jobs.get(input.closest('tr').dataset.job)?.priority ?? 0;
      }
    });
  }

  render(jobs = []) {
    this.jobs = new Map(jobs.map((job) => [String(job.id), job]));
    syncChildren(this.tbody, jobs, (job) => job.id, createRow, (row, job) => {
      updateRow(row, job);
      row.classList.toggle('selected', String(job.id) === String(this.selected));
    });
    setHidden(this.empty, jobs.length > 0);
  }

  select(id) {
    this.selected = id;
    for (const row of this.tbody.rows) {
      row.classList.toggle('selected', row.dataset.job === String(id));
    }
  }

  #click(event) {
    const row = event.target.closest('tr[data-job]');
    const job = row && this.jobs.get(row.dataset.job);
    if (!job) return;
    const button = event.target.closest('button[data-action]');
    if (button) {
      const action = button.dataset.action;
      if (action === 'priority') {
        const input = row.querySelector('input.priority');
        this.onAction(job, action, Number(input.value), () => delete input.dataset.dirty);
      } else {
        this.onAction(job, action);
      }
      return;
    }
    if (event.target.closest('input, select, a')) return;
    if (job.picture) this.onSelect(job);
  }
}

function button(action, text, extra = '') {
  const props = { type: 'button', class: `small ${extra}`.trim(), dataset: { action }, text };
  return el('button', props);
}

function createRow(job) {
  const bars = UNIT_STATES.map((state) => el('span', { class: 'bar', dataset: { state } }));
  const priority = el('input', {
    type: 'number',
    class: 'priority',
    min: -1000,
    max: 1000,
    step: 1,
    'aria-label': `Priority of job ${job.id}`,
  });
  return el(
    'tr',
    { dataset: { job: job.id } },
    el('td', { class: 'num id' }),
    el(
      'td',
      { class: 'name' },
      el('span', { class: 'job-name' }),
      // Falls through to the row's click: shows the picture (and is reachable by keyboard).
      el('button', { type: 'button', class: 'pic-tag', text: 'picture', hidden: true }),
    ),
    el('td', { class: 'owner' }),
    el('td', { class: 'kernel' }),
    el('td', { class: 'state' }, el('span', { class: 'badge' }), el('div', { class: 'state-note' })),
    el(
      'td',
      { class: 'priority-cell' },
      priority,
      button('priority', 'Set'),
      el('span', { class: 'priority-text' }),
    ),
    el(
      'td',
      { class: 'progress' },
      el('div', { class: 'bars' }, bars),
      el(
        'div',
        { class: 'progress-text' },
        el('span', { class: 'done-count' }),
        el('span', { class: 'units' }),
        el('span', { class: 'pct' }),
      ),
    ),
    el('td', { class: 'num rate' }),
    el('td', { class: 'num eta' }),
    el(
      'td',
      { class: 'actions' },
      button('pause', 'Pause'),
      button('resume', 'Resume'),
      button('cancel', 'Cancel', 'danger-quiet'),
    ),
  );
}

function updateRow(row, job) {
  const cells = row.cells;
  const counts = job.counts ?? {};
  const units = job.units || 0;
  row.dataset.state = job.state;
  setText(cells[0], job.id);
  setText(cells[1].firstChild, job.name || `job ${job.id}`);
  setAttr(cells[1], 'title', `created ${fmt.fullTime(job.created_at)}`);
  setHidden(cells[1].lastChild, !job.picture);
  setAttr(cells[1].lastChild, 'aria-label', `Show the picture of job ${job.id}`);
  row.classList.toggle('has-picture', Boolean(job.picture));
  setText(cells[2], job.owner ?? fmt.DASH);
  setText(cells[3], job.kernel ?? fmt.DASH);
  const badge = cells[4].firstChild;
  setText(badge, job.state);
  badge.dataset.state = job.state;
  // Why a job cannot progress, or its first failed unit's error (a shader's compiler message).
  const note = job.stalled ? `stalled: ${job.stalled}` : (job.error ?? '');
  setText(cells[4].lastChild, note.length > 160 ? `${note.slice(0, 157)}...` : note);
  setAttr(cells[4], 'title', note || null);

  const input = cells[5].querySelector('input');
  const editing = input.dataset.dirty || document.activeElement === input;
  if (!editing) input.value = job.priority ?? 0;
  // A finished job's priority no longer matters: shown as text, not as a control.
  const finished = FINISHED.has(job.state);
  setHidden(input, finished);
  setHidden(cells[5].querySelector('button'), finished);
  setText(cells[5].querySelector('.priority-text'), finished ? (job.priority ?? 0) : '');

  const parts = [];
  for (const bar of cells[6].querySelectorAll('.bar')) {
    const n = counts[bar.dataset.state] ?? 0;
    const width = units ? `${(100 * n) / units}%` : '0%';
    if (bar.style.width !== width) bar.style.width = width;
    setAttr(bar, 'title', `${bar.dataset.state}: ${fmt.count(n)}`);
    parts.push(`${bar.dataset.state} ${fmt.count(n)}`);
  }
  setAttr(cells[6], 'title', parts.join(' · '));
  const done = counts.done ?? 0;
  const doneCount = cells[6].querySelector('.done-count');
  setText(doneCount, done);
  doneCount.dataset.done = done;
  setText(cells[6].querySelector('.units'), ` / ${units}`);
  const pct = units ? Math.floor((100 * done) / units) : 0;
  setText(cells[6].querySelector('.pct'), units ? `${pct}%` : '');
  const trouble = (counts.failed ?? 0) > 0;
  cells[6].classList.toggle('trouble', trouble);

  const active = !FINISHED.has(job.state);
  setText(cells[7], active ? fmt.rate(job.rate) : fmt.DASH);
  setText(cells[8], active && job.state === 'running' ? fmt.duration(job.eta_s) : fmt.DASH);
  for (const button of cells[9].querySelectorAll('button[data-action]')) {
    setHidden(button, !ACTIONS[button.dataset.action](job));
  }
}
