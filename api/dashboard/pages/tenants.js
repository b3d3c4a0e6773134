// Tenants and tokens: every tenant, a form to add one; one tenant with its access rules, rate
// limit, data policy and monthly quota, enable or disable, and its tokens — a new token is shown
// once, right after it is made; a token can be revoked or given its own rules.

import { del, get, patch, post, put } from '../api.js';
import { action, failure, field, h, input, list, money, notice, number, section, select, table, time, values } from '../ui.js';
import { allTenants } from './usage.js';

const rules = (t) => [
  t.allowed_domains ? `domains: ${t.allowed_domains.join(', ')}` : null,
  t.allowed_ips ? `ips: ${t.allowed_ips.join(', ')}` : null,
  t.rate_limit ? `${t.rate_limit.per_minute}/min (burst ${t.rate_limit.burst})` : null,
].filter(Boolean).join('; ') || '—';

/** The access rules a form holds, as the API takes them (empty fields clear a rule). */
function accessBody(form) {
  const v = values(form);
  const perMinute = Number(v.per_minute);
  return {
    allowed_domains: list(v.allowed_domains),
    allowed_ips: list(v.allowed_ips),
    rate_limit: perMinute ? { per_minute: perMinute, burst: Number(v.burst) || perMinute } : null,
    data_policy: v.data_policy || null,
  };
}

/** The rule fields; a token's (`inherit`) fall back to its tenant's when empty. */
function accessFields(subject, inherit) {
  const empty = inherit ? "empty: the tenant's" : 'empty: any';
  return [
    field('Allowed domains', input('allowed_domains', { value: (subject.allowed_domains || []).join(', '), placeholder: 'app.example.com, *.example.com' }), empty),
    field('Allowed IPs', input('allowed_ips', { value: (subject.allowed_ips || []).join(', '), placeholder: '10.0.0.0/8' }), empty),
    field('Requests per minute', input('per_minute', { type: 'number', min: 0, value: subject.rate_limit ? subject.rate_limit.per_minute : '' }), 'empty: no limit'),
    field('Burst', input('burst', { type: 'number', min: 0, value: subject.rate_limit ? subject.rate_limit.burst : '' })),
    field('Data policy', select('data_policy', [...(inherit ? [['', 'as its tenant']] : []), ['any', 'any provider'], ['local_only', 'local only']], subject.data_policy || '')),
  ];
}

function submitting(form, run) {
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      await run();
    } catch (error) {
      form.append(failure(error));
    }
  });
  return form;
}

async function tenants(page) {
  const all = await allTenants();
  const form = h('form', { class: 'new-tenant', 'aria-label': 'New tenant' },
    h('h2', {}, 'New tenant'), field('Name', input('name', { required: true })), h('button', { type: 'submit' }, 'Create tenant'));
  submitting(form, async () => {
    const tenant = await post('/v1/admin/tenants', { name: values(form).name });
    page.go(`#/tenants/${tenant.id}`);
  });
  page.show(
    h('h1', {}, 'Tenants'),
    table([
      { title: 'tenant', value: (t) => h('a', { href: `#/tenants/${t.id}` }, t.name) },
      { title: 'state', value: (t) => (t.disabled_at ? h('span', { class: 'badge failed' }, 'disabled') : 'active') },
      { title: 'rules', value: rules },
      { title: 'data policy', value: (t) => t.data_policy },
      { title: 'created', value: (t) => time(t.created_at) },
    ], all, { label: 'Tenants' }),
    form);
}

function tokenForm(page, tenant, shown) {
  const form = h('form', { class: 'new-token', 'aria-label': 'New token' },
    h('h2', {}, 'New token'),
    field('Name', input('name', { required: true })),
    field('Role', select('role', [['client', 'client'], ['admin', 'admin']], 'client')),
    ...accessFields({}, true),
    h('button', { type: 'submit' }, 'Create token'));
  return submitting(form, async () => {
    const body = { name: values(form).name, role: values(form).role, ...accessBody(form) };
    for (const key of Object.keys(body)) if (body[key] === null) delete body[key];
    const created = await post(`/v1/admin/tenants/${tenant.id}/tokens`, body);
    await page.refresh();
    shown.replaceChildren(h('div', { class: 'secret', role: 'status' },
      h('strong', {}, 'Copy this token now: it is shown only once.'),
      h('code', { class: 'token', 'data-token': 'new' }, created.token)));
  });
}

function tokenRow(page, token) {
  const edit = h('form', { class: 'token-rules', 'aria-label': `Rules of ${token.name}` }, ...accessFields(token, true), h('button', { type: 'submit' }, 'Save rules'));
  submitting(edit, async () => {
    await patch(`/v1/admin/tokens/${token.id}`, accessBody(edit));
    await page.refresh();
  });
  return h('details', {}, h('summary', {}, 'Rules'), edit);
}

async function tenant(page) {
  const found = (await allTenants()).find((t) => t.id === page.id);
  if (!found) {
    page.show(notice('error', 'No such tenant.'));
    return;
  }
  const shown = h('div', {});
  const body = h('div', {});
  page.show(h('h1', {}, `Tenant ${found.name}`), shown, body);
  page.refresh = async () => {
    const [current, tokens, quota] = await Promise.all([
      allTenants().then((all) => all.find((t) => t.id === page.id)),
      get(`/v1/admin/tenants/${page.id}/tokens`, { limit: 100 }),
      get(`/v1/admin/tenants/${page.id}/quota`),
    ]);
    body.replaceChildren(...draw(page, current, tokens.data, quota, shown));
  };
  await page.refresh();
}

function draw(page, t, tokens, quota, shown) {
  const access = h('form', { class: 'tenant-rules', 'aria-label': 'Tenant rules' },
    ...accessFields(t, false),
    field('Batches may overflow to the cloud', input('batch_overflow', { type: 'checkbox', checked: t.batch_overflow })),
    h('button', { type: 'submit' }, 'Save rules'));
  submitting(access, async () => {
    const rulesBody = accessBody(access);
    rulesBody.data_policy = rulesBody.data_policy || 'any';
    await patch(`/v1/admin/tenants/${t.id}`, { ...rulesBody, batch_overflow: values(access).batch_overflow });
    await page.refresh();
  });
  const limits = h('form', { class: 'quota', 'aria-label': 'Monthly quota' },
    field('Monthly cost budget (USD)', input('monthly_cost_budget', { inputmode: 'decimal', value: quota.monthly_cost_budget ?? '' }), 'empty: none'),
    field('Monthly token quota', input('monthly_token_quota', { type: 'number', min: 0, value: quota.monthly_token_quota ?? '' }), 'empty: none'),
    h('button', { type: 'submit' }, 'Save quota'));
  submitting(limits, async () => {
    const v = values(limits);
    await put(`/v1/admin/tenants/${t.id}/quota`, {
      monthly_cost_budget: v.monthly_cost_budget || null,
      monthly_token_quota: v.monthly_token_quota ? Number(v.monthly_token_quota) : null,
    });
    await page.refresh();
  });
  return [
    h('p', {}, t.disabled_at ? `Disabled since ${time(t.disabled_at)}. ` : 'Active. ',
      action(t.disabled_at ? 'Enable tenant' : 'Disable tenant', async () => {
        await post(`/v1/admin/tenants/${t.id}/${t.disabled_at ? 'enable' : 'disable'}`);
        await page.refresh();
      })),
    section('Access rules (defaults for its tokens)', access),
    section('Quota', h('p', {}, `This month: ${number(quota.used_tokens)} tokens and ${money(quota.used_cost)} used, ${number(quota.reserved_tokens)} tokens reserved; resets ${time(quota.resets_at)}.`), limits),
    section('Tokens', table([
      { title: 'name', value: (k) => k.name },
      { title: 'role', value: (k) => k.role },
      { title: 'prefix', value: (k) => h('code', {}, k.prefix) },
      { title: 'rules', value: rules },
      { title: 'last used', value: (k) => time(k.last_used_at) },
      { title: 'state', value: (k) => (k.revoked_at ? `revoked ${time(k.revoked_at)}` : 'active') },
      { title: '', value: (k) => (k.revoked_at ? '' : [tokenRow(page, k), action('Revoke', async () => {
        await del(`/v1/admin/tokens/${k.id}`);
        await page.refresh();
      })]) },
    ], tokens, { label: 'Tokens', empty: 'No tokens.' }), tokenForm(page, t, shown)),
  ];
}

export function render(page) {
  return page.id ? tenant(page) : tenants(page);
}
