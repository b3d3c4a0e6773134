// The audit log: who changed what and when (settings, tenants, tokens, models, hosts, prices),
// newest first, a page at a time.

import { get } from '../api.js';
import { action, h, short, table, time } from '../ui.js';

export async function render(page) {
  const rows = h('div', {});
  page.show(h('h1', {}, 'Audit log'), rows);
  let cursor = null;
  const more = async () => {
    const entries = await get('/v1/admin/audit', { limit: 100, cursor });
    cursor = entries.next_cursor;
    rows.append(table([
      { title: 'when', value: (e) => time(e.at) },
      { title: 'action', value: (e) => e.action },
      { title: 'target', value: (e) => e.target || '—' },
      { title: 'by token', value: (e) => short(e.actor_token_id) },
      { title: 'details', value: (e) => (e.details ? h('code', { class: 'details' }, JSON.stringify(e.details)) : '—') },
    ], entries.data, { label: 'Audit log', empty: 'Nothing audited yet.' }));
    if (cursor) rows.append(action('Older entries', async () => { rows.lastChild.remove(); await more(); }));
  };
  await more();
}
