// The disagreements feed: units whose replicas did not agree, newest first.

import { $, el, setHidden, syncChildren } from './dom.js';
import * as fmt from './format.js';

export function renderDisagreements(items = [], onWorker) {
  const list = $('disagreements');
  // Entries never change once reported, so a new row is built only for a new id.
  syncChildren(
    list,
    items,
    (d) => d.id,
    (d) => createItem(d, onWorker),
    () => {},
  );
  setHidden($('disagreements-empty'), items.length > 0);
}

function createItem(d, onWorker) {
  const replicas = (d.replicas ?? []).map((r) => {
    const link = el('button', {
      type: 'button',
      class: 'link worker-link',
      title: `Show worker ${r.worker} in the workers table`,
      text: fmt.shortId(r.worker),
    });
    link.addEventListener('click', () => onWorker(r.worker));
    return el(
      'li',
      { class: 'replica', dataset: { state: r.state } },
      link,
      el('span', { class: 'badge', dataset: { state: r.state }, text: r.state }),
      el('code', { class: 'digest', title: r.digest ?? '', text: (r.digest ?? '').slice(0, 8) }),
    );
  });
  return el(
    'li',
    { dataset: { unit: d.unit } },
    el(
      'div',
      { class: 'feed-head' },
      el('time', { title: fmt.fullTime(d.at), text: fmt.when(d.at) }),
      el('span', { class: 'where', text: `job ${d.job} · unit ${d.unit} (index ${d.index})` }),
      el('span', { class: 'badge kernel', text: d.kernel }),
    ),
    el('p', { class: 'summary', text: d.summary }),
    el('ul', { class: 'replicas' }, replicas),
  );
}
