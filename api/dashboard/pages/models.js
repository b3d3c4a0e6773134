// Models: what the gateway serves and what each fleet host has installed, a pull with its
// progress (POST /v1/models/pull as an event stream) and delete. Prices: every price with its
// history, a form to add one, and the usage no price covered.

import { del, events, get, post } from '../api.js';
import { action, failure, field, h, input, money, notice, number, section, select, table, time, values } from '../ui.js';

const gb = (bytes) => `${(bytes / 1e9).toFixed(1)} GB`;

function pullForm(page, hosts) {
  const status = h('div', { class: 'pull-status', 'aria-live': 'polite' });
  const bar = h('progress', { max: 100, value: 0, 'aria-label': 'Pull progress', hidden: true });
  const form = h('form', { class: 'pull', 'aria-label': 'Pull a model' },
    h('h2', {}, 'Pull a model'),
    field('Model', input('model', { required: true, placeholder: 'llama3.1:8b' })),
    field('Host', select('host', [['', 'every enabled Ollama host'], ...hosts.map((host) => [host.name, host.name])], '')),
    h('button', { type: 'submit' }, 'Pull'), bar, status);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const { model, host } = values(form);
    bar.hidden = false;
    status.replaceChildren(notice('ok', `Pulling ${model}…`));
    try {
      await events('POST', '/v1/models/pull', {
        body: host ? { model, host } : { model },
        signal: page.signal,
        onEvent: (name, data) => {
          const line = JSON.parse(data);
          if (name === 'progress') {
            if (line.total) bar.value = Math.floor((100 * (line.completed || 0)) / line.total);
            status.replaceChildren(notice('ok', `${line.host}: ${line.status}`));
          } else if (name === 'done') {
            bar.value = 100;
            status.replaceChildren(notice('ok', `${model} pulled.`));
          } else if (name === 'error') {
            status.replaceChildren(notice('error', line.error));
          }
        },
      });
    } catch (error) {
      status.replaceChildren(failure(error));
    }
  });
  return form;
}

async function models(page) {
  const { data, hosts } = await get('/v1/models');
  const installed = hosts.flatMap((host) => (host.installed || []).map((model) => ({ host, model })));
  page.show(
    h('h1', {}, 'Models'),
    section('Served', table([
      { title: 'model', value: (m) => m.model },
      { title: 'routes', value: (m) => m.providers.map((p) => `${p.provider}${p.host_kind ? ` (${p.host_kind})` : ''}: ${p.upstream_model}${p.hosts ? ` (on ${p.hosts.join(', ') || 'no host'})` : ''}`).join('; ') },
      { title: 'price per 1k in / out', value: (m) => m.providers.map((p) => (p.price ? `${p.provider} ${money(p.price.input_per_1k)} / ${money(p.price.output_per_1k)}` : `${p.provider} unpriced`)).join('; ') },
    ], data, { label: 'Served models' })),
    section('Installed on the fleet', table([
      { title: 'host', value: (i) => i.host.name },
      { title: 'model', value: (i) => i.model.name },
      { title: 'size', value: (i) => gb(i.model.size) },
      { title: 'modified', value: (i) => time(i.model.modified_at) },
      { title: '', value: (i) => (i.host.kind === 'ollama' ? action('Delete', async () => {
        await del(`/v1/models/${i.model.name}`, { host: i.host.name });
        page.go(window.location.hash);
      }) : '') },
    ], installed, { label: 'Installed models', empty: 'No host reported its models.' }),
    table([
      { title: 'host', value: (host) => host.name },
      { title: 'kind', value: (host) => host.kind },
      { title: 'enabled', value: (host) => (host.enabled ? 'yes' : 'no') },
      { title: 'reachable', value: (host) => (host.reachable ? 'yes' : 'no') },
    ], hosts, { label: 'Hosts', empty: 'No host in the fleet.' })),
    pullForm(page, hosts.filter((host) => host.kind === 'ollama')));
}

function priceForm(page) {
  const form = h('form', { class: 'price', 'aria-label': 'Add a price' },
    h('h2', {}, 'Add a price'),
    field('Provider', select('provider', [['ollama', 'ollama'], ['openai', 'openai']], 'openai')),
    field('Upstream model', input('model', { required: true })),
    field('Input per 1k tokens (USD)', input('input_per_1k', { required: true, inputmode: 'decimal', placeholder: '0.0004' })),
    field('Output per 1k tokens (USD)', input('output_per_1k', { required: true, inputmode: 'decimal', placeholder: '0.0016' })),
    field('Effective from', input('effective_from', { type: 'datetime-local' }), 'empty: now'),
    h('button', { type: 'submit' }, 'Add price'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const price = values(form);
    const body = { provider: price.provider, model: price.model, input_per_1k: price.input_per_1k, output_per_1k: price.output_per_1k };
    if (price.effective_from) body.effective_from = new Date(price.effective_from).toISOString();
    try {
      await post('/v1/admin/prices', body);
      page.go(window.location.hash);
    } catch (error) {
      form.append(failure(error));
    }
  });
  return form;
}

async function prices(page) {
  const [list, unpriced] = await Promise.all([get('/v1/admin/prices'), get('/v1/admin/usage/unpriced')]);
  page.show(
    h('h1', {}, 'Prices'),
    table([
      { title: 'provider', value: (p) => p.provider },
      { title: 'model', value: (p) => p.model },
      { title: 'in per 1k', value: (p) => money(p.input_per_1k) },
      { title: 'out per 1k', value: (p) => money(p.output_per_1k) },
      { title: 'effective from', value: (p) => time(p.effective_from) },
      { title: '', value: (p) => (p.current ? h('span', { class: 'badge succeeded' }, 'current') : 'history') },
    ], list.data, { label: 'Prices' }),
    priceForm(page),
    section('Usage no price covered', table([
      { title: 'provider', value: (u) => u.provider },
      { title: 'model', value: (u) => u.upstream_model },
      { title: 'requests', value: (u) => number(u.requests) },
    ], unpriced.data, { label: 'Unpriced usage', empty: 'Every call had a price.' })));
}

export function render(page) {
  return page.name === 'prices' ? prices(page) : models(page);
}
