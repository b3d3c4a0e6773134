// The dashboard's one way to the gateway: its public JSON API, with the token signed in for this
// browser session (sessionStorage: gone when the tab closes, never in a URL).

const TOKEN = 'tollgate.token';
const ROLE = 'tollgate.role';

/** The signed-in token, and its role once known (asked once per sign-in, not per page). */
export const session = {
  token: () => sessionStorage.getItem(TOKEN),
  role: () => sessionStorage.getItem(ROLE),
  signIn: (token) => {
    sessionStorage.setItem(TOKEN, token);
    sessionStorage.removeItem(ROLE);
  },
  knowRole: (role) => sessionStorage.setItem(ROLE, role),
  signOut: () => {
    sessionStorage.removeItem(TOKEN);
    sessionStorage.removeItem(ROLE);
  },
};

/** A refusal from the API, carrying its problem+json. */
export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

function url(path, query) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== '') params.set(name, value);
  }
  const search = params.toString();
  return search ? `${path}?${search}` : path;
}

function headers(extra) {
  return { Authorization: `Bearer ${session.token()}`, Accept: 'application/json', ...extra };
}

/** Calls the API; resolves to the JSON body (null when empty), rejects with an ApiError. */
export async function call(method, path, { query, body, token } = {}) {
  const init = { method, headers: headers(body === undefined ? {} : { 'Content-Type': 'application/json' }) };
  if (token) init.headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(url(path, query), init);
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { detail: text };
    }
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const get = (path, query) => call('GET', path, { query });
export const post = (path, body, query) => call('POST', path, { body, query });
export const patch = (path, body) => call('PATCH', path, { body });
export const put = (path, body) => call('PUT', path, { body });
export const del = (path, query) => call('DELETE', path, { query });

/** Reads a response's lines as they arrive, calling `onLine` with each. */
async function eachLine(response, onLine) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n')) >= 0) {
      onLine(buffer.slice(0, end).replace(/\r$/, ''));
      buffer = buffer.slice(end + 1);
    }
  }
  if (buffer) onLine(buffer);
}

/**
 * Follows a server-sent event stream (EventSource cannot send a bearer token, so it is read with
 * fetch), calling `onEvent(name, data)` per event until the stream ends or `signal` aborts.
 */
export async function events(method, path, { query, body, signal, onEvent }) {
  const extra = { Accept: 'text/event-stream' };
  if (body !== undefined) extra['Content-Type'] = 'application/json';
  const response = await fetch(url(path, query), {
    method,
    headers: headers(extra),
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  if (!response.ok) {
    const text = await response.text();
    let problem = null;
    try { problem = JSON.parse(text); } catch { problem = { detail: text }; }
    throw new ApiError(response.status, problem);
  }
  let name = 'message';
  let data = [];
  await eachLine(response, (line) => {
    if (line === '') {
      if (data.length) onEvent(name, data.join('\n'));
      name = 'message';
      data = [];
    } else if (line.startsWith('event:')) {
      name = line.slice(6).trim();
    } else if (line.startsWith('data:')) {
      data.push(line.slice(5).replace(/^ /, ''));
    }
  });
}

/** Fetches a JSONL body (a batch's results) as parsed lines, at most `limit` of them. */
export async function jsonLines(path, query, limit) {
  const response = await fetch(url(path, query), { headers: headers({ Accept: 'application/jsonl' }) });
  if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
  const lines = [];
  await eachLine(response, (line) => {
    if (line.trim() && lines.length < limit) lines.push(JSON.parse(line));
  });
  return lines;
}
