// Jobs: a tenant's jobs newest first, filtered by status and batch (admins choose the tenant);
// and one job with its result, its provider calls (attempts) and its webhook deliveries.

import { get, post } from '../api.js';
import { action, h, input, money, notice, number, section, select, short, table, time, values } from '../ui.js';
import { tenantChoices } from './usage.js';

const STATUSES = ['', 'pending', 'queued', 'running', 'retrying', 'succeeded', 'failed', 'cancelled'];

function filters(page, tenants) {
  const q = page.query;
  const form = h('form', { class: 'filters', 'aria-label': 'Filter jobs' },
    select('status', STATUSES.map((s) => [s, s || 'any status']), q.get('status'), { 'aria-label': 'Status' }),
    tenants ? select('tenant', tenants, q.get('tenant'), { 'aria-label': 'Tenant' }) : null,
    input('batch', { placeholder: 'batch id', value: q.get('batch') || '', 'aria-label': 'Batch id' }),
    h('button', { type: 'submit' }, 'Filter'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const chosen = new URLSearchParams(Object.entries(values(form)).filter(([, v]) => v));
    page.go(`#/jobs?${chosen}`);
  });
  return form;
}

const jobLink = (job, tenant) => h('a', { href: `#/jobs/${job.id}${tenant ? `?tenant=${tenant}` : ''}` }, short(job.id));

async function list(page) {
  const admin = page.role === 'admin';
  const tenants = admin ? [['', 'my tenant'], ...(await tenantChoices())] : null;
  const tenant = page.query.get('tenant') || '';
  const rows = h('div', {});
  page.show(h('h1', {}, 'Jobs'), filters(page, tenants), rows);
  let cursor = null;
  const more = async () => {
    const pageOf = await get('/v1/jobs', {
      status: page.query.get('status'), batch_id: page.query.get('batch'), tenant_id: tenant, cursor, limit: 50,
    });
    cursor = pageOf.next_cursor;
    rows.append(table([
      { title: 'job', value: (j) => jobLink(j, tenant) },
      { title: 'kind', value: (j) => j.kind },
      { title: 'status', value: (j) => h('span', { class: `badge ${j.status}` }, j.status) },
      { title: 'model', value: (j) => j.model },
      { title: 'provider', value: (j) => j.provider || '—' },
      { title: 'batch item', value: (j) => j.custom_id || '—' },
      { title: 'cost', value: (j) => money(j.usage && j.usage.cost) },
      { title: 'accepted', value: (j) => time(j.created_at) },
    ], pageOf.data, { label: 'Jobs', empty: 'No jobs match.' }));
    if (cursor) rows.append(action('Older jobs', async () => { rows.lastChild.remove(); await more(); }));
  };
  await more();
}

async function one(page) {
  const tenant = page.query.get('tenant') || undefined;
  const query = { tenant_id: tenant };
  const path = `/v1/jobs/${encodeURIComponent(page.id)}`;
  const [job, attempts, deliveries] = await Promise.all([
    get(path, query), get(`${path}/attempts`, query), get(`${path}/deliveries`, query),
  ]);
  const result = job.result ? JSON.stringify(job.result, null, 2) : null;
  const cancellable = ['pending', 'queued', 'running', 'retrying'].includes(job.status) && !tenant;
  page.show(
    h('h1', {}, `Job ${short(job.id)}`),
    h('dl', { class: 'facts' },
      [['id', job.id], ['status', job.status], ['kind', job.kind], ['model', job.model],
        ['provider', job.provider ? `${job.provider} (${job.upstream_model})` : '—'], ['route', job.route_reason || '—'],
        ['batch', job.batch_id ? h('a', { href: `#/batches/${job.batch_id}${tenant ? `?tenant=${tenant}` : ''}` }, job.batch_id) : '—'],
        ['tokens', job.usage ? `${number(job.usage.prompt_tokens)} in, ${number(job.usage.completion_tokens)} out` : '—'],
        ['cost', money(job.usage && job.usage.cost)], ['accepted', time(job.created_at)],
        ['started', time(job.started_at)], ['finished', time(job.finished_at)]]
        .map(([term, detail]) => [h('dt', {}, term), h('dd', {}, detail)])),
    cancellable ? action('Cancel job', async () => { await post(`${path}/cancel`); page.go(window.location.hash); }) : null,
    job.error ? notice('error', `${job.error.code}: ${job.error.message}`) : null,
    section('Result', result ? h('pre', { class: 'result' }, result) : h('p', { class: 'empty' }, 'No result (yet).')),
    section('Provider calls', table([
      { title: 'run', value: (a) => a.claim },
      { title: 'provider', value: (a) => a.provider },
      { title: 'host', value: (a) => a.host || '—' },
      { title: 'model', value: (a) => a.upstream_model },
      { title: 'started', value: (a) => time(a.started_at) },
      { title: 'latency', value: (a) => `${number(a.latency_ms)} ms` },
      { title: 'outcome', value: (a) => a.outcome },
      { title: 'error', value: (a) => a.error_code || '—' },
      { title: 'tokens', value: (a) => `${number(a.prompt_tokens)} / ${number(a.completion_tokens)}` },
    ], attempts.data, { label: 'Attempts', empty: 'No provider call yet.' })),
    section('Webhook deliveries', table([
      { title: 'event', value: (d) => d.event_type },
      { title: 'status', value: (d) => d.status },
      { title: 'attempts', value: (d) => number(d.attempts.length) },
      { title: 'last error', value: (d) => d.last_error || '—' },
      { title: 'url', value: (d) => d.url },
    ], deliveries.data, { label: 'Deliveries', empty: 'No webhook for this job.' })),
  );
}

export function render(page) {
  return page.id ? one(page) : list(page);
}
