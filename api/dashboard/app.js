// The dashboard's shell: sign-in, the navigation, and a router over the URL's fragment
// (`#/jobs?status=failed`), which holds only what a page shows, never the token.

import { ApiError, get, session } from './api.js';
import { failure, field, h, input, notice } from './ui.js';

const PAGES = {
  overview: { title: 'Overview', module: './pages/overview.js', admin: true },
  settings: { title: 'Settings', module: './pages/settings.js', admin: true },
  usage: { title: 'Usage', module: './pages/usage.js' },
  jobs: { title: 'Jobs', module: './pages/jobs.js' },
  batches: { title: 'Batches', module: './pages/batches.js' },
  'dead-letters': { title: 'Dead letters', module: './pages/operations.js', admin: true },
  deliveries: { title: 'Webhooks', module: './pages/operations.js', admin: true },
  models: { title: 'Models', module: './pages/models.js', admin: true },
  prices: { title: 'Prices', module: './pages/models.js', admin: true },
  tenants: { title: 'Tenants', module: './pages/tenants.js', admin: true },
  audit: { title: 'Audit', module: './pages/audit.js', admin: true },
};

const main = document.getElementById('main');
let role = null;
let current = null;

/** The page the fragment names: its name, the id after it, and its query. */
function route() {
  const [path, search] = window.location.hash.replace(/^#\/?/, '').split('?');
  const [name, ...rest] = path.split('/');
  return { name: name || (role === 'admin' ? 'overview' : 'usage'), id: rest.join('/') || null, query: new URLSearchParams(search || '') };
}

export function go(hash) {
  if (window.location.hash === hash) show();
  else window.location.hash = hash;
}

/**
 * Who the token is: an admin (admin routes answer), a client (they refuse), or no one. Asked once
 * at sign-in; a token revoked later is found out by the next page's calls (401: signed out).
 */
async function whoAmI() {
  try {
    await get('/v1/admin/settings');
    return 'admin';
  } catch (error) {
    // Any other refusal (a token's allowed origins or addresses) is the sign-in's error.
    if (error instanceof ApiError && error.status === 403 && error.problem.code === 'forbidden') return 'client';
    throw error;
  }
}

function signInForm(message) {
  const token = input('token', { type: 'password', autocomplete: 'off', required: true, placeholder: 'tg_…', id: 'token' });
  const form = h('form', { class: 'sign-in', 'aria-label': 'Sign in' },
    h('h1', {}, 'Sign in to Tollgate'),
    h('p', {}, 'Paste an API token. It is kept for this browser tab only and sent with each call to the API.'),
    message ? notice('error', message) : null,
    field('Token', token),
    h('button', { type: 'submit' }, 'Sign in'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    session.signIn(token.value.trim());
    await start();
  });
  return form;
}

function navigation() {
  const nav = document.getElementById('nav');
  nav.replaceChildren(...Object.entries(PAGES)
    .filter(([, page]) => role === 'admin' || !page.admin)
    .map(([name, page]) => h('a', { href: `#/${name}`, 'data-page': name }, page.title)));
  document.getElementById('who').textContent = role === 'admin' ? 'admin' : 'client';
  const signOut = document.getElementById('sign-out');
  signOut.hidden = false;
  signOut.onclick = () => {
    session.signOut();
    window.location.hash = '';
    start();
  };
}

async function show() {
  if (current) current.abort();
  const controller = new AbortController();
  current = controller;
  const where = route();
  const page = PAGES[where.name];
  for (const link of document.querySelectorAll('#nav a')) {
    link.classList.toggle('current', link.dataset.page === where.name);
  }
  if (!page) {
    main.replaceChildren(notice('error', 'No such page.'));
    return;
  }
  document.title = `${page.title} · Tollgate`;
  const root = h('div', { class: 'page', 'data-page': where.name });
  main.replaceChildren(root);
  const context = {
    root, role, name: where.name, id: where.id, query: where.query, signal: controller.signal, go,
    /** Adds the page's parts; a part left out (`null`, `false`) is skipped, not written. */
    show(...parts) {
      root.append(...parts.flat(Infinity).filter((part) => part !== null && part !== undefined && part !== false));
    },
    every(run, ms) {
      const timer = setInterval(() => run().catch(() => {}), ms);
      controller.signal.addEventListener('abort', () => clearInterval(timer));
    },
  };
  try {
    const module = await import(page.module);
    await module.render(context);
    if (controller.signal.aborted) return;
    // Drawn with everything it first reads (tests and the benchmark wait for this).
    root.dataset.ready = 'true';
    performance.mark('dashboard-ready');
  } catch (error) {
    if (controller.signal.aborted) return;
    if (error instanceof ApiError && error.status === 401) {
      session.signOut();
      start('That token is not valid (or was revoked).');
      return;
    }
    root.replaceChildren(failure(error));
  }
}

async function start(message) {
  document.getElementById('nav').replaceChildren();
  document.getElementById('who').textContent = '';
  document.getElementById('sign-out').hidden = true;
  if (!session.token()) {
    main.replaceChildren(signInForm(message));
    return;
  }
  try {
    role = session.role() || await whoAmI();
    session.knowRole(role);
  } catch (error) {
    session.signOut();
    const why = error instanceof ApiError && error.status === 401 ? 'That token is not valid (or was revoked).' : error.message;
    main.replaceChildren(signInForm(why));
    return;
  }
  navigation();
  await show();
}

window.addEventListener('hashchange', () => { if (role && session.token()) show(); });
start();
