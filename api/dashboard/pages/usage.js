// Usage and spend, from the daily rollups: per day over the last 30 days, per model this month,
// and (admins) per tenant this month, with the response cache's hits and what they saved. A client sees its own tenant; an admin every tenant or one.

import { get } from '../api.js';
import { barChart, h, money, number, section, select, table } from '../ui.js';

/** Every tenant, a page of the listing at a time. */
export async function allTenants() {
  const tenants = [];
  let cursor = null;
  do {
    const page = await get('/v1/admin/tenants', { limit: 100, cursor });
    tenants.push(...page.data);
    cursor = page.next_cursor;
  } while (cursor);
  return tenants;
}

/** Tenants as a select's choices: [id, name]. */
export async function tenantChoices() {
  return (await allTenants()).map((t) => [t.id, t.name]);
}

/** The tenants charged most, as chart points. */
function topTenants(tenants) {
  return [...tenants].sort((a, b) => Number(b.cost) - Number(a.cost)).slice(0, 20)
    .map((t) => ({ label: t.tenant, values: [t.cost] }));
}

export async function render(page) {
  const admin = page.role === 'admin';
  const tenant = page.query.get('tenant') || (admin ? 'all' : '');
  const query = tenant ? { tenant_id: tenant } : {};
  const [history, month, spend, tenants] = await Promise.all([
    get('/v1/usage/history', query),
    get('/v1/usage', query),
    admin ? get('/v1/admin/spend') : null,
    admin ? tenantChoices() : [],
  ]);
  const days = history.data.map((d) => ({ label: d.day.slice(5), values: [d.cost] }));
  const requests = history.data.map((d) => ({ label: d.day.slice(5), values: [d.requests] }));
  const chooser = admin
    ? select('tenant', [['all', 'All tenants'], ...tenants], tenant, {
      'aria-label': 'Tenant',
      onchange: (event) => page.go(`#/usage?tenant=${event.target.value}`),
    })
    : null;
  const models = month.by_model;
  page.show(
    h('h1', {}, 'Usage and spend'),
    chooser,
    barChart(days, { title: `Spend per day, ${history.from} to ${history.to}`, series: ['cost (USD)'], format: money }),
    barChart(requests, { title: 'Requests per day', series: ['requests'] }),
    section(`By model, ${month.month}`,
      models.length ? barChart(models.map((m) => ({ label: m.model, values: [m.cost] })), { title: 'Spend per model this month', series: ['cost (USD)'], format: money }) : null,
      table([
        { title: 'model', value: (m) => m.model },
        { title: 'requests', value: (m) => number(m.requests) },
        { title: 'tokens in', value: (m) => number(m.prompt_tokens) },
        { title: 'tokens out', value: (m) => number(m.completion_tokens) },
        { title: 'cost', value: (m) => money(m.cost) },
        { title: 'cache hits', value: (m) => number(m.cache_hits) },
        { title: 'saved by the cache', value: (m) => money(m.saved_cost) },
      ], models, { label: 'Usage by model', empty: 'No usage this month.' })),
    spend ? section(`By tenant, ${spend.from} to ${spend.to}`,
      spend.tenants.length ? barChart(topTenants(spend.tenants), { title: 'Charges per tenant this month (the 20 highest)', series: ['charged (USD)'], format: money }) : null,
      table([
        { title: 'tenant', value: (t) => h('a', { href: `#/usage?tenant=${t.tenant_id}` }, t.tenant) },
        { title: 'requests', value: (t) => number(t.requests) },
        { title: 'tokens', value: (t) => number(t.total_tokens) },
        { title: 'charged', value: (t) => money(t.cost) },
        { title: 'cache hits', value: (t) => number(t.cache_hits) },
        { title: 'saved by the cache', value: (t) => money(t.saved_cost) },
      ], spend.tenants, { label: 'Charges by tenant', empty: 'No tenant used anything this month.' }),
      h('h3', {}, 'Paid to providers'),
      table([
        { title: 'provider', value: (p) => p.provider },
        { title: 'model', value: (p) => p.upstream_model },
        { title: 'calls', value: (p) => number(p.calls) },
        { title: 'cost', value: (p) => money(p.cost) },
      ], spend.providers, { label: 'Spend by provider', empty: 'No provider calls this month.' })) : null,
  );
}
