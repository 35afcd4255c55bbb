// The audit log panel: who did what, newest first. Not part of the stream: fetched on sign-in,
// after each action, and every few seconds.

import { api } from './api.js';
import { $, el, setHidden, syncChildren } from './dom.js';
import * as fmt from './format.js';

const REFRESH_MS = 10_000;

export class AuditLog {
  constructor() {
    this.timer = null;
    $('audit-refresh').addEventListener('click', () => this.refresh());
  }

  start() {
    this.stop();
    this.refresh();
    this.timer = setInterval(() => this.refresh(), REFRESH_MS);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
  }

  async refresh() {
    try {
      const { entries = [] } = (await api('GET', '/api/v1/audit?limit=50')) ?? {};
      syncChildren($('audit'), entries, (e) => e.id, createEntry, () => {});
      setHidden($('audit-empty'), entries.length > 0);
    } catch (error) {
      console.warn('console: audit log', error);
    }
  }
}

function createEntry(e) {
  return el(
    'li',
    { dataset: { action: e.action } },
    el(
      'div',
      { class: 'feed-head' },
      el('time', { title: fmt.fullTime(e.at), text: fmt.when(e.at) }),
      el('span', { class: 'badge action', dataset: { action: e.action }, text: e.action }),
      el('span', { class: 'target', text: e.target ?? '' }),
    ),
    el(
      'p',
      { class: 'audit-detail' },
      el('span', { class: 'actor', text: `by ${e.actor}` }),
      e.detail ? el('span', { class: 'detail', text: ` · ${e.detail}` }) : null,
    ),
  );
}
