// The workers table. Sorting, filtering and paging happen on the coordinator (there may be
// tens of thousands of workers): this module keeps the query and asks for a new stream.

import { $, el, setAttr, setHidden, setText, syncChildren } from './dom.js';
import * as fmt from './format.js';

const FILTER_DEBOUNCE_MS = 300;
// Columns whose natural first order is ascending (text); numbers start with the largest.
const ASCENDING_FIRST = new Set(['id', 'kind', 'addr', 'state']);
const ACTIONS = {
  ban: (w) => w.state !== 'banned',
  unban: (w) => w.state === 'banned',
  drain: (w) => w.state === 'active' || w.state === 'paused',
  undrain: (w) => w.state === 'draining',
};

export class WorkersTable {
  // onQuery(): the query changed (open a new stream). onAction(worker, action).
  constructor({ onQuery, onAction }) {
    this.tbody = $('workers');
    this.table = this.tbody.closest('table');
    this.onQuery = onQuery;
    this.onAction = onAction;
    this.query = { sort: 'credit', order: 'desc', q: '', kind: '', state: '', page: 0 };
    this.query.per_page = Number($('worker-per-page').value) || 50;
    this.total = 0;
    this.rows = new Map();
    this.debounce = null;
    this.#wireControls();
    this.#wireHeaders();
    this.tbody.addEventListener('click', (event) => {
      const button = event.target.closest('button[data-action]');
      const worker = button && this.rows.get(button.closest('tr').dataset.worker);
      if (worker) this.onAction(worker, button.dataset.action);
    });
  }

  // The stream's query string; empty filters are left out.
  params() {
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(this.query)) {
      if (value !== '' && value != null) params.set(name, String(value));
    }
    return params;
  }

  // Shows a worker (e.g. one named in a disagreement) by filtering on its id.
  showWorker(id) {
    $('worker-filter').value = id;
    this.#change({ q: id });
    $('worker-filter').scrollIntoView({ block: 'center', behavior: 'smooth' });
  }

  render(block, now) {
    if (!block) return;
    this.table.removeAttribute('aria-busy');
    const rows = block.rows ?? [];
    this.rows = new Map(rows.map((w) => [String(w.id), w]));
    this.total = block.total ?? rows.length;
    const page = block.page ?? this.query.page;
    const perPage = block.per_page ?? this.query.per_page;
    // A page past the end (workers left, or a narrower filter): go to the last one.
    if (!rows.length && page > 0 && this.total > 0) {
      this.#change({ page: Math.max(0, Math.ceil(this.total / perPage) - 1) }, { keepPage: true });
      return;
    }
    syncChildren(this.tbody, rows, (w) => w.id, createRow, (row, w) => updateRow(row, w, now));
    const first = rows.length ? page * perPage + 1 : 0;
    const last = first + rows.length - 1;
    setText($('workers-range'), rows.length ? `${fmt.count(first)}–${fmt.count(last)}` : '0');
    setText($('workers-total'), fmt.count(this.total));
    $('workers-total').dataset.total = this.total;
    $('workers-prev').disabled = page <= 0;
    $('workers-next').disabled = (page + 1) * perPage >= this.total;
    setHidden($('workers-empty'), rows.length > 0);
    this.#showSort(block.sort ?? this.query.sort, block.order ?? this.query.order);
  }

  #change(changes, { keepPage = false } = {}) {
    clearTimeout(this.debounce);
    Object.assign(this.query, changes);
    if (!keepPage && !('page' in changes)) this.query.page = 0;
    this.table.setAttribute('aria-busy', 'true');
    this.#showSort(this.query.sort, this.query.order);
    this.onQuery();
  }

  #wireControls() {
    const filter = $('worker-filter');
    filter.addEventListener('input', () => {
      clearTimeout(this.debounce);
      this.debounce = setTimeout(() => {
        if (filter.value.trim() !== this.query.q) this.#change({ q: filter.value.trim() });
      }, FILTER_DEBOUNCE_MS);
    });
    $('worker-kind').addEventListener('change', (e) => this.#change({ kind: e.target.value }));
    $('worker-state').addEventListener('change', (e) => this.#change({ state: e.target.value }));
    $('worker-per-page').addEventListener('change', (e) =>
      this.#change({ per_page: Number(e.target.value) }),
    );
    $('workers-prev').addEventListener('click', () =>
      this.#change({ page: Math.max(0, this.query.page - 1) }),
    );
    $('workers-next').addEventListener('click', () => this.#change({ page: this.query.page + 1 }));
  }

  // Header cells become buttons, so sorting works from the keyboard too.
  #wireHeaders() {
    for (const th of this.table.querySelectorAll('th[data-sort]')) {
      const button = el('button', { type: 'button', class: 'sort' }, ...th.childNodes);
      th.append(button);
      button.addEventListener('click', () => {
        const column = th.dataset.sort;
        const order =
          column === this.query.sort
            ? this.query.order === 'asc'
              ? 'desc'
              : 'asc'
            : ASCENDING_FIRST.has(column)
              ? 'asc'
              : 'desc';
        this.#change({ sort: column, order });
      });
    }
    this.#showSort(this.query.sort, this.query.order);
  }

  #showSort(column, order) {
    for (const th of this.table.querySelectorAll('th[data-sort]')) {
      const sorted = th.dataset.sort === column;
      setAttr(th, 'aria-sort', sorted ? (order === 'asc' ? 'ascending' : 'descending') : null);
    }
  }
}

function createRow(w) {
  const button = (action, text, extra = '') =>
    el('button', { type: 'button', class: `small ${extra}`, dataset: { action }, text });
  return el(
    'tr',
    { dataset: { worker: w.id } },
    el('td', { class: 'id' }, el('code')),
    el('td', { class: 'kind' }, el('span', { class: 'badge' })),
    el(
      'td',
      { class: 'name' },
      el('span', { class: 'wname' }),
      el('span', { class: 'adapter' }),
      el('span', { class: 'reason' }),
    ),
    el('td', { class: 'addr' }),
    el('td', { class: 'since' }),
    el('td', { class: 'num leases' }),
    el('td', { class: 'num valid' }),
    el('td', { class: 'num invalid' }),
    el('td', { class: 'num errors' }),
    el('td', { class: 'num streak' }),
    el('td', { class: 'num credibility' }),
    el('td', { class: 'num credit' }),
    el('td', { class: 'state' }, el('span', { class: 'badge' })),
    el(
      'td',
      { class: 'actions' },
      // Ban last, so it lines up down the column whatever else a row offers.
      button('drain', 'Drain'),
      button('undrain', 'Undrain'),
      button('ban', 'Ban', 'danger-quiet'),
      button('unban', 'Unban'),
    ),
  );
}

function adapterText(adapter) {
  if (!adapter) return '';
  const { vendor, architecture, description } = adapter;
  return [description, [vendor, architecture].filter(Boolean).join(' ')]
    .filter(Boolean)
    .join(' · ');
}

function updateRow(row, w, now) {
  const c = row.cells;
  row.dataset.state = w.state;
  setText(c[0].firstChild, fmt.shortId(w.id));
  setAttr(c[0], 'title', w.id);
  const kind = c[1].firstChild;
  setText(kind, w.kind);
  kind.dataset.kind = w.kind;
  const adapter = adapterText(w.adapter);
  setText(c[2].children[0], w.name || fmt.DASH);
  setText(c[2].children[1], adapter);
  setText(c[2].children[2], w.ban_reason ? `banned: ${w.ban_reason}` : '');
  setAttr(c[2], 'title', [w.name, adapter].filter(Boolean).join('\n'));
  setText(c[3], w.addr ?? fmt.DASH);
  if (w.connected_since == null) {
    setText(c[4], w.last_seen ? `${fmt.duration(now - w.last_seen)} ago` : 'offline');
    setAttr(c[4], 'title', w.last_seen ? `last seen ${fmt.fullTime(w.last_seen)}` : null);
  } else {
    setText(c[4], fmt.duration(now - w.connected_since));
    setAttr(c[4], 'title', `connected since ${fmt.fullTime(w.connected_since)}`);
  }
  setText(c[5], fmt.count(w.leases));
  setText(c[6], fmt.count(w.valid));
  setText(c[7], fmt.count(w.invalid));
  c[7].classList.toggle('warn', w.invalid > 0);
  setText(c[8], fmt.count(w.errors));
  c[8].classList.toggle('bad', w.errors > 0);
  setText(c[9], fmt.count(w.consecutive_valid));
  // How likely its next result is right (coordinator/credibility.py), and what it rests on.
  setText(c[10], w.credibility == null ? fmt.DASH : w.credibility.toFixed(4));
  setAttr(
    c[10],
    'title',
    `spot-checks passed ${w.checks_passed ?? 0}, failed ${w.checks_failed ?? 0}; ` +
      `results confirmed by others in a row ${w.consecutive_valid ?? 0}`,
  );
  c[10].classList.toggle('bad', (w.checks_failed ?? 0) > 0);
  setText(c[11], fmt.credit(w.credit));
  const state = c[12].firstChild;
  setText(state, w.state);
  state.dataset.state = w.state;
  setAttr(c[12], 'title', w.ban_reason ? `banned: ${w.ban_reason}` : null);
  for (const button of c[13].querySelectorAll('button[data-action]')) {
    setHidden(button, !ACTIONS[button.dataset.action](w));
  }
}
