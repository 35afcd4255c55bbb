// The tokens panel: list, create (the new token is shown once), revoke.

import { api } from './api.js';
import { $, el, setHidden, setText, syncChildren } from './dom.js';
import * as fmt from './format.js';

export class TokensPanel {
  // confirm(text, okLabel) -> Promise<bool>; notify(text, kind) shows the outcome.
  constructor({ confirm, notify, changed }) {
    this.confirm = confirm;
    this.notify = notify;
    this.changed = changed;
    this.tokens = new Map();
    $('tokens-panel').addEventListener('toggle', () => {
      if ($('tokens-panel').open) this.refresh();
    });
    $('token-form').addEventListener('submit', (event) => {
      event.preventDefault();
      this.#create();
    });
    $('token-copy').addEventListener('click', () => this.#copy());
    $('token-dismiss').addEventListener('click', () => this.#hideCreated());
    $('tokens').addEventListener('click', (event) => {
      const button = event.target.closest('button[data-action="revoke"]');
      const token = button && this.tokens.get(button.closest('tr').dataset.token);
      if (token) this.#revoke(token, button);
    });
  }

  async refresh() {
    try {
      const { tokens = [] } = (await api('GET', '/api/v1/tokens')) ?? {};
      this.tokens = new Map(tokens.map((t) => [String(t.id), t]));
      syncChildren($('tokens'), tokens, (t) => t.id, createRow, updateRow);
    } catch (error) {
      if (error.status !== 401 && error.status !== 403) {
        this.notify(`Could not list tokens: ${error.detail ?? error.message}`, 'error');
      }
    }
  }

  // Sign-out: the one-time token must not stay on screen for the next person.
  reset() {
    this.#hideCreated();
    $('tokens').replaceChildren();
    this.tokens.clear();
  }

  async #create() {
    const name = $('token-name').value.trim();
    const role = $('token-role').value;
    const expires = $('token-expires').value;
    if (!name) return;
    const button = $('token-create');
    button.disabled = true;
    const body = { role, name };
    if (expires) body.expires_in_s = Number(expires);
    try {
      const created = await api('POST', '/api/v1/tokens', body);
      $('token-value').value = created.token;
      setHidden($('token-created'), false);
      $('token-value').select();
      $('token-name').value = '';
      this.notify(`Created ${created.role} token “${created.name}”`);
      this.refresh();
      this.changed();
    } catch (error) {
      if (error.status !== 401 && error.status !== 403) {
        this.notify(`Create token failed: ${error.detail ?? error.message}`, 'error');
      }
    } finally {
      button.disabled = false;
    }
  }

  async #revoke(token, button) {
    const ok = await this.confirm(
      `Revoke the ${token.role} token “${token.name}” (id ${token.id})? Programs using it ` +
        'stop working at once.',
      'Revoke',
    );
    if (!ok) return;
    button.disabled = true;
    try {
      await api('DELETE', `/api/v1/tokens/${encodeURIComponent(token.id)}`);
      this.notify(`Revoked token “${token.name}”`);
      this.refresh();
      this.changed();
    } catch (error) {
      button.disabled = false;
      if (error.status !== 401 && error.status !== 403) {
        this.notify(`Revoke failed: ${error.detail ?? error.message}`, 'error');
      }
    }
  }

  async #copy() {
    const input = $('token-value');
    input.select();
    try {
      await navigator.clipboard.writeText(input.value);
      this.notify('Token copied to the clipboard');
    } catch {
      this.notify('Copy it by hand: the text is selected', 'error');
    }
  }

  #hideCreated() {
    $('token-value').value = '';
    setHidden($('token-created'), true);
  }
}

function createRow(t) {
  return el(
    'tr',
    { dataset: { token: t.id } },
    el('td', { class: 'num' }),
    el('td'),
    el('td', {}, el('span', { class: 'badge' })),
    el('td'),
    el('td'),
    el('td'),
    el(
      'td',
      { class: 'actions' },
      el('button', {
        type: 'button',
        class: 'small danger-quiet',
        dataset: { action: 'revoke' },
        text: 'Revoke',
      }),
    ),
  );
}

function updateRow(row, t) {
  const c = row.cells;
  const expired = t.expires_at != null && t.expires_at * 1000 <= Date.now();
  row.classList.toggle('revoked', t.revoked_at != null || expired);
  setText(c[0], t.id);
  setText(c[1], t.name || fmt.DASH);
  setText(c[2].firstChild, t.role);
  c[2].firstChild.dataset.role = t.role;
  setText(c[3], fmt.when(t.created_at));
  setText(c[4], t.revoked_at == null ? fmt.DASH : fmt.when(t.revoked_at));
  setText(c[5], expiry(t, expired));
  setHidden(c[6].firstChild, t.revoked_at != null);
}

// "never", the date, or the date and "(expired)": an expired token is refused with a 401.
export function expiry(t, expired) {
  if (t.expires_at == null) return 'never';
  return expired ? `${fmt.when(t.expires_at)} (expired)` : fmt.when(t.expires_at);
}
