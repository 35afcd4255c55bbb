// The operator token and authenticated requests. The token lives in sessionStorage only:
// it is gone when the tab closes, and other tabs and sites never see it.

const TOKEN_KEY = 'tabgrid.operatorToken';

export const AUTH_MESSAGES = {
  401: 'unknown or revoked token',
  403: 'this token is a submitter token; the console needs an operator token',
};

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

export class ApiError extends Error {
  constructor(status, title, detail, errors) {
    super(detail || title || `HTTP ${status}`);
    this.status = status;
    this.title = title;
    this.detail = detail || title || `HTTP ${status}`;
    this.errors = errors;
  }
}

let authFailure = () => {};

// Called with 401 or 403 from any request: the console then returns to the sign-in form.
export function onAuthFailure(handler) {
  authFailure = handler;
}

export function authHeaders(extra = {}) {
  return { Authorization: `Bearer ${token.get() ?? ''}`, ...extra };
}

// An RFC 9457 problem document (or whatever the body is) as an ApiError.
export async function problemOf(response) {
  let body = null;
  try {
    const text = await response.text();
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  const detail = body?.detail || body?.title || response.statusText;
  return new ApiError(response.status, body?.title, detail, body?.errors);
}

async function send(method, path, body) {
  const headers = authHeaders({ Accept: 'application/json, application/problem+json' });
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
  });
  if (response.status === 401 || response.status === 403) {
    const error = await problemOf(response);
    authFailure(response.status, error);
    throw error;
  }
  if (!response.ok) throw await problemOf(response);
  return response;
}

export async function api(method, path, body) {
  const response = await send(method, path, body);
  if (response.status === 204) return null;
  const type = response.headers.get('content-type') || '';
  return type.includes('json') ? response.json() : null;
}

export async function apiBlob(path) {
  return (await send('GET', path)).blob();
}

export const post = (path, body = {}) => api('POST', path, body);
