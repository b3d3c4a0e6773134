// Settings, the operators' menu: the active provider and the fallback (any provider of the
// registry), hybrid's cloud side, the local fleet on or off, the provider `openai`'s key
// (write-only: only whether one is set shows), and the limits; below, the registry of providers as
// it stands (GET /v1/admin/providers). A save sends only what changed (PATCH /v1/admin/settings);
// the answer is shown at once, and the change is in the audit log.

import { get, patch } from '../api.js';
import { failure, field, h, input, notice, section, select, table, time, values } from '../ui.js';

const NUMBERS = [
  ['ai_overflow_wait_ms', 'Overflow wait (ms)', 'hybrid: how long a job waits for a local slot before the cloud'],
  ['provider_attempts', 'Attempts per provider', 'transient failures retried on one provider'],
  ['retry_min_delay_ms', 'Retry delay, least (ms)'],
  ['retry_max_delay_ms', 'Retry delay, most (ms)'],
  ['max_job_attempts', 'Runs per job', 'before a job fails for good'],
  ['structured_output_attempts', 'Calls per structured answer', 'on one provider, while its answers do not match their JSON schema'],
  ['circuit_failure_threshold', 'Circuit opens after', 'transient failures in a row'],
  ['circuit_cooldown_ms', 'Circuit cool-down (ms)'],
  ['openai_max_concurrency', 'OpenAI calls at once', 'per worker'],
];

// The provider `openai`'s own fields, shown while it exists.
function openaiFields(settings) {
  if (settings.openai_base_url === null) return [];
  const key = settings.ai_openai_api_key;
  return [
    field('OpenAI key', input('ai_openai_api_key', { type: 'password', autocomplete: 'off', placeholder: key.set ? `set, ends in …${key.last4}` : 'not set' }), 'write-only: type a new key to replace it'),
    field('OpenAI base URL', input('openai_base_url', { type: 'url', value: settings.openai_base_url })),
  ];
}

function form(settings, providers, onSaved) {
  const named = providers.map((p) => [p.name, p.kind === 'fleet' ? `${p.name} (the fleet)` : `${p.name} (${p.kind})`]);
  const clouds = named.filter(([name]) => name !== 'local');
  const numbers = NUMBERS.filter(([name]) => settings[name] !== null);
  const controls = h('form', { class: 'settings', 'aria-label': 'Settings' },
    h('fieldset', {}, h('legend', {}, 'Providers'),
      field('Active provider', select('ai_provider', [...named, ['hybrid', 'hybrid (local first)']], settings.ai_provider)),
      field('Fallback', select('ai_fallback_provider', [['none', 'none'], ...named], settings.ai_fallback_provider)),
      field('Hybrid cloud', select('ai_hybrid_cloud', clouds, settings.ai_hybrid_cloud), 'hybrid: the cloud provider that takes what the fleet does not'),
      field('Local fleet enabled', input('ai_local_enabled', { type: 'checkbox', checked: settings.ai_local_enabled })),
      field('Local share (%)', input('ai_local_share', { type: 'number', min: 0, max: 100, value: settings.ai_local_share ?? '' }), 'hybrid: a fixed share sent to the fleet; empty: overflow'),
      openaiFields(settings)),
    h('fieldset', {}, h('legend', {}, 'Limits'),
      numbers.map(([name, label, hint]) => field(label, input(name, { type: 'number', min: 0, value: settings[name] }), hint))),
    h('button', { type: 'submit' }, 'Save'),
    h('p', { class: 'muted' }, `Version ${settings.version}, changed ${time(settings.updated_at)}`));
  controls.addEventListener('submit', async (event) => {
    event.preventDefault();
    const next = values(controls);
    const change = {};
    for (const name of ['ai_provider', 'ai_fallback_provider', 'ai_hybrid_cloud', 'openai_base_url']) {
      if (name in next && next[name] !== settings[name]) change[name] = next[name];
    }
    if (next.ai_local_enabled !== settings.ai_local_enabled) change.ai_local_enabled = next.ai_local_enabled;
    const share = next.ai_local_share === '' ? null : Number(next.ai_local_share);
    if (share !== settings.ai_local_share) change.ai_local_share = share;
    for (const [name] of numbers) {
      if (Number(next[name]) !== settings[name]) change[name] = Number(next[name]);
    }
    if (next.ai_openai_api_key) change.ai_openai_api_key = next.ai_openai_api_key;
    try {
      const saved = await patch('/v1/admin/settings', change);
      onSaved(saved, Object.keys(change).length ? notice('ok', `Saved: ${Object.keys(change).map((k) => k === 'ai_openai_api_key' ? 'OpenAI key' : k).join(', ')}.`) : notice('ok', 'Nothing changed.'));
    } catch (error) {
      controls.prepend(failure(error));
    }
  });
  return controls;
}

// The registry as it stands: cloud accounts are added and changed at /v1/admin/providers.
function registry(providers) {
  const columns = [
    { title: 'Name', value: (p) => p.name },
    { title: 'Kind', value: (p) => p.kind },
    { title: 'Address', value: (p) => (p.kind === 'fleet' ? `${p.hosts} host(s)` : p.base_url) },
    { title: 'Key', value: (p) => (p.api_key ? (p.api_key.set ? `…${p.api_key.last4}` : 'none') : '—') },
    { title: 'Calls at once', value: (p) => `${p.max_concurrency ?? 'host slots'}` },
    { title: 'Enabled', value: (p) => (p.enabled ? 'yes' : 'no') },
  ];
  return section('Providers', table(columns, providers, { label: 'Providers' }));
}

export async function render(page) {
  const body = h('div', {});
  page.show(h('h1', {}, 'Settings'), body);
  const [settings, providers] = await Promise.all([get('/v1/admin/settings'), get('/v1/admin/providers')]);
  const show = (saved, message) => body.replaceChildren(message || '', form(saved, providers.data, show), registry(providers.data));
  show(settings);
}
