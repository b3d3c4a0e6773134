// Overview: requests and jobs per minute over the last hour, the jobs not finished by status,
// the queues, what was charged today and this month, and each provider's health as the workers
// report it. Read from GET /v1/admin/overview, again every five seconds.

import { get } from '../api.js';
import { barChart, cards, h, money, number, section, table } from '../ui.js';

function minute(t) {
  return new Date(t).toISOString().slice(11, 16);
}

function draw(o) {
  const activity = o.activity.map((m) => ({ label: minute(m.minute), values: [m.requests] }));
  const jobs = o.activity.map((m) => ({ label: minute(m.minute), values: [m.jobs_accepted, m.jobs_succeeded, m.jobs_failed] }));
  return [
    cards([
      ['Charged today', money(o.spend.today), 'spend-today'],
      ['Charged this month', money(o.spend.month), 'spend-month'],
      ['Running', number(o.jobs.running), 'running'],
      ['Queued', number(o.jobs.queued), 'queued'],
      ['API instances', number(o.api_instances), 'api-instances'],
      ['Workers', number(o.workers), 'workers'],
    ]),
    barChart(activity, { title: 'Requests per minute', series: ['requests'] }),
    barChart(jobs, { title: 'Jobs per minute', series: ['accepted', 'succeeded', 'failed'] }),
    h('div', { class: 'columns' },
      section('Jobs by status', table(
        [{ title: 'status', value: (r) => r[0] }, { title: 'jobs', value: (r) => number(r[1]) }],
        Object.entries(o.jobs), { label: 'Jobs by status' })),
      section('Queues', o.queues === null
        ? h('p', { class: 'empty' }, 'RabbitMQ cannot be asked right now.')
        : table([{ title: 'queue', value: (q) => q.queue }, { title: 'messages', value: (q) => number(q.messages) }],
          o.queues, { label: 'Queues' }))),
    section('Providers', table([
      { title: 'provider', value: (p) => p.provider },
      { title: 'host', value: (p) => p.host || '—' },
      { title: 'circuit', value: (p) => h('span', { class: `badge ${p.circuit}` }, p.circuit.replace('_', ' ')) },
      { title: 'open in', value: (p) => `${p.open_in} of ${p.workers} workers` },
      { title: 'in flight / slots', value: (p) => `${p.in_flight} / ${p.slots}` },
    ], o.providers, { empty: 'No worker has reported in the last 30 seconds.', label: 'Providers' })),
    h('p', { class: 'muted' }, `As of ${new Date(o.generated_at).toLocaleTimeString()}`),
  ];
}

export async function render(page) {
  const body = h('div', {});
  page.show(h('h1', {}, 'Overview'), body);
  const refresh = async () => body.replaceChildren(...draw(await get('/v1/admin/overview')));
  await refresh();
  page.every(refresh, 5000);
}
