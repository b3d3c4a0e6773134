// Batches: a tenant's batches newest first, a form to submit one (a prompt per line), and one
// batch with its progress followed live over its event stream (GET /v1/batches/{id}/events),
// its counts, usage and first results.

import { events, get, jsonLines, post } from '../api.js';
import { action, failure, field, h, input, money, number, section, select, short, table, time, values } from '../ui.js';
import { tenantChoices } from './usage.js';

const done = (c) => c.succeeded + c.failed + c.cancelled;
const percent = (c) => (c.total ? Math.floor((100 * done(c)) / c.total) : 100);

function submitForm(page, models) {
  const form = h('form', { class: 'new-batch', 'aria-label': 'New batch' },
    h('h2', {}, 'New batch'),
    field('Model', select('model', models.map((m) => [m, m]), models[0])),
    field('Prompts', h('textarea', { name: 'prompts', rows: 5, required: true, placeholder: 'One prompt per line' }), 'each line is one item (generate)'),
    h('button', { type: 'submit' }, 'Submit batch'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const { model, prompts } = values(form);
    const items = prompts.split('\n').map((p) => p.trim()).filter(Boolean)
      .map((prompt, i) => ({ custom_id: `line-${i + 1}`, prompt }));
    try {
      const batch = await post('/v1/batches', { kind: 'generate', model, items });
      page.go(`#/batches/${batch.id}`);
    } catch (error) {
      form.append(failure(error));
    }
  });
  return form;
}

async function list(page) {
  const admin = page.role === 'admin';
  const tenant = page.query.get('tenant') || '';
  const [batches, models, tenants] = await Promise.all([
    get('/v1/batches', { tenant_id: tenant, limit: 50 }),
    get('/v1/models'),
    admin ? tenantChoices() : null,
  ]);
  page.show(
    h('h1', {}, 'Batches'),
    tenants ? select('tenant', [['', 'my tenant'], ...tenants], tenant, {
      'aria-label': 'Tenant', onchange: (event) => page.go(`#/batches?tenant=${event.target.value}`),
    }) : null,
    table([
      { title: 'batch', value: (b) => h('a', { href: `#/batches/${b.id}${tenant ? `?tenant=${tenant}` : ''}` }, short(b.id)) },
      { title: 'model', value: (b) => b.model },
      { title: 'status', value: (b) => h('span', { class: `badge ${b.status}` }, b.status) },
      { title: 'progress', value: (b) => `${number(done(b.counts))} / ${number(b.counts.total)}` },
      { title: 'cost', value: (b) => money(b.usage.cost) },
      { title: 'submitted', value: (b) => time(b.created_at) },
    ], batches.data, { label: 'Batches', empty: 'No batches yet.' }),
    tenant ? null : submitForm(page, models.data.map((m) => m.model)));
}

function progress(batch) {
  const c = batch.counts;
  return h('div', { class: 'progress' },
    h('progress', { max: 100, value: percent(c), 'aria-label': 'Batch progress' }),
    h('strong', { class: 'percent', 'data-status': batch.status }, `${percent(c)} %`),
    h('span', {}, ` ${batch.status}: ${number(done(c))} of ${number(c.total)} items ended`),
    table(Object.keys(c).filter((k) => k !== 'total').map((k) => ({ title: k, value: () => number(c[k]) })), [c], { label: 'Items by status' }),
    h('p', {}, `Tokens ${number(batch.usage.total_tokens)}, cost ${money(batch.usage.cost)}`));
}

async function one(page) {
  const tenant = page.query.get('tenant') || undefined;
  const path = `/v1/batches/${encodeURIComponent(page.id)}`;
  const batch = await get(path, { tenant_id: tenant });
  const live = h('div', {}, progress(batch));
  const results = h('div', {});
  const showResults = async () => {
    const lines = await jsonLines(`${path}/results`, {}, 50);
    results.replaceChildren(table([
      { title: 'item', value: (r) => r.custom_id },
      { title: 'status', value: (r) => r.status },
      { title: 'job', value: (r) => h('a', { href: `#/jobs/${r.job_id}` }, short(r.job_id)) },
      { title: 'text', value: (r) => (r.result && r.result.text ? r.result.text.slice(0, 120) : r.error ? r.error.code : '—') },
    ], lines, { label: 'Results' }));
  };
  page.show(
    h('h1', {}, `Batch ${short(batch.id)}`),
    h('p', { class: 'muted' }, `${batch.kind} · ${batch.model} · submitted ${time(batch.created_at)}`),
    live,
    tenant ? null : h('p', {},
      batch.status === 'in_progress' ? action('Cancel batch', async () => { await post(`${path}/cancel`); }) : null,
      action('Show first results', showResults)),
    section('Results', results));
  // The stream ends after the batch has ended; leaving the page aborts it.
  events('GET', `${path}/events`, {
    query: { tenant_id: tenant },
    signal: page.signal,
    onEvent: (name, data) => { if (name === 'batch') live.replaceChildren(progress(JSON.parse(data))); },
  }).catch((error) => { if (!page.signal.aborted) live.append(failure(error)); });
}

export function render(page) {
  return page.id ? one(page) : list(page);
}
