// What needs an operator's hand: dead letters (jobs whose message the broker gave up on) with
// requeue, and webhook deliveries by status with redeliver.

import { get, post } from '../api.js';
import { action, h, notice, select, short, table, time } from '../ui.js';

async function deadLetters(page) {
  const { data } = await get('/v1/admin/dead-letters', { limit: 100 });
  page.show(
    h('h1', {}, 'Dead letters'),
    h('p', { class: 'muted' }, 'Jobs whose message was redelivered until the broker dead-lettered it. Requeue gives one a fresh start.'),
    table([
      { title: 'job', value: (d) => h('a', { href: `#/jobs/${d.job.id}?tenant=${d.tenant_id}` }, short(d.job.id)) },
      { title: 'kind', value: (d) => d.job.kind },
      { title: 'model', value: (d) => d.job.model },
      { title: 'status', value: (d) => d.job.status },
      { title: 'dead-lettered', value: (d) => time(d.dead_lettered_at) },
      { title: '', value: (d) => action('Requeue', async () => {
        await post(`/v1/admin/dead-letters/${d.job.id}/requeue`);
        page.go(window.location.hash);
      }) },
    ], data, { label: 'Dead letters', empty: 'No dead letters.' }));
}

async function deliveries(page) {
  const status = page.query.get('status') || 'failed';
  const { data } = await get('/v1/admin/webhook-deliveries', { status, limit: 100 });
  const redelivered = h('div', {});
  page.show(
    h('h1', {}, 'Webhook deliveries'),
    select('status', [['failed', 'failed'], ['pending', 'pending'], ['succeeded', 'succeeded']], status, {
      'aria-label': 'Status', onchange: (event) => page.go(`#/deliveries?status=${event.target.value}`),
    }),
    redelivered,
    table([
      { title: 'webhook-id', value: (d) => d.id },
      { title: 'event', value: (d) => d.event_type },
      { title: 'job or batch', value: (d) => (d.job_id
        ? h('a', { href: `#/jobs/${d.job_id}?tenant=${d.tenant_id}` }, short(d.job_id))
        : h('a', { href: `#/batches/${d.batch_id}?tenant=${d.tenant_id}` }, short(d.batch_id))) },
      { title: 'url', value: (d) => d.url },
      { title: 'attempts', value: (d) => d.attempts },
      { title: 'last error', value: (d) => d.last_error || '—' },
      { title: 'created', value: (d) => time(d.created_at) },
      { title: '', value: (d) => (d.status === 'pending' ? '' : action('Redeliver', async () => {
        await post(`/v1/admin/webhook-deliveries/${d.id}/redeliver`);
        redelivered.replaceChildren(notice('ok', `Delivery ${d.id} will be attempted again.`));
      })) },
    ], data, { label: 'Deliveries', empty: `No ${status} deliveries.` }));
}

export function render(page) {
  return page.name === 'dead-letters' ? deadLetters(page) : deliveries(page);
}
