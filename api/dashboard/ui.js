// Building blocks of the pages: elements made with `h` (text is always set as text, never parsed
// as HTML), tables, SVG charts, forms and notices.

const SVG = 'http://www.w3.org/2000/svg';
const SVG_TAGS = new Set(['svg', 'rect', 'line', 'text', 'g', 'title', 'polyline']);

/** An element: `h('a', {href: '#/jobs'}, 'Jobs')`. Attributes starting with `on` are listeners. */
export function h(tag, attrs, ...children) {
  const element = SVG_TAGS.has(tag) ? document.createElementNS(SVG, tag) : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else if (name === 'value' && 'value' in element && !SVG_TAGS.has(tag)) element.value = value;
    else element.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export const number = (n) => (n === null || n === undefined ? '—' : Number(n).toLocaleString('en-US'));
export const money = (s) => (s === null || s === undefined ? '—' : `$${Number(s).toLocaleString('en-US', { maximumFractionDigits: 6 })}`);
export const time = (t) => (t ? new Date(t).toISOString().replace('T', ' ').slice(0, 19) : '—');
export const short = (id) => (id ? String(id).slice(-12) : '—');

/** A table of `rows` with `columns`: [{title, value: row => cell}]. */
export function table(columns, rows, { empty = 'Nothing here yet.', label } = {}) {
  if (!rows.length) return h('p', { class: 'empty' }, empty);
  return h('table', { 'aria-label': label },
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c.title)))),
    h('tbody', {}, rows.map((row) => h('tr', {}, columns.map((c) => h('td', {}, c.value(row)))))));
}

/** A page section with a heading. */
export const section = (title, ...children) => h('section', {}, h('h2', {}, title), ...children);

/** Figures side by side: [[label, value]]. */
export const cards = (items) => h('div', { class: 'cards' },
  items.map(([label, value, id]) => h('div', { class: 'card', 'data-figure': id }, h('span', {}, label), h('strong', {}, value))));

/**
 * A bar chart: one bar per point of each series, stacked side by side; `points` are
 * [{label, values: [n per series]}]. Drawn as SVG with each bar titled with its figure.
 */
export function barChart(points, { series, title, format = number, height = 160 }) {
  const width = 720;
  const pad = { left: 56, right: 8, top: 10, bottom: 24 };
  const top = Math.max(0, ...points.flatMap((p) => p.values.map(Number)));
  const max = top > 0 ? top : 1;
  const slot = (width - pad.left - pad.right) / Math.max(1, points.length);
  const bar = Math.max(1, (slot * 0.8) / series.length);
  const y = (v) => pad.top + (height - pad.top - pad.bottom) * (1 - Number(v) / max);
  const labelEvery = Math.ceil(points.length / 8);
  const chart = h('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': title, class: 'chart' },
    h('line', { x1: pad.left, x2: width - pad.right, y1: y(0), y2: y(0), class: 'axis' }),
    h('text', { x: pad.left - 6, y: y(max) + 4, class: 'tick', 'text-anchor': 'end' }, format(max)),
    h('text', { x: pad.left - 6, y: y(0), class: 'tick', 'text-anchor': 'end' }, format(0)),
    points.map((point, i) => h('g', {},
      point.values.map((value, s) => h('rect', {
        x: pad.left + i * slot + slot * 0.1 + s * bar, y: y(value), width: bar,
        height: Math.max(0, y(0) - y(value)), class: `bar s${s}`, 'data-value': value,
      }, h('title', {}, `${point.label} · ${series[s]}: ${format(value)}`))),
      i % labelEvery === 0
        ? h('text', { x: pad.left + i * slot + slot / 2, y: height - 6, class: 'tick', 'text-anchor': 'middle' }, point.label)
        : null)));
  const legend = h('p', { class: 'legend' }, series.map((name, s) => h('span', { class: `key s${s}` }, name)));
  return h('figure', { class: 'chart-box' }, h('figcaption', {}, title), chart, legend);
}

/** A labelled form control. */
export const field = (label, control, hint) => h('label', { class: 'field' }, h('span', {}, label), control, hint ? h('small', {}, hint) : null);

export const input = (name, attrs = {}) => h('input', { name, ...attrs });

export function select(name, options, selected, attrs = {}) {
  return h('select', { name, ...attrs },
    options.map(([value, label]) => h('option', { value, selected: String(value) === String(selected ?? '') }, label)));
}

/** A message above a page's content: `kind` is `ok` or `error`. */
export function notice(kind, text) {
  return h('p', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
}

/** A refusal or failure from the API, said plainly. */
export function failure(error) {
  if (error && error.status === 403 && error.problem.code === 'forbidden') {
    return h('div', { class: 'refused' },
      h('h2', {}, 'Admins only'),
      notice('error', 'This page needs an admin token; the token you signed in with is a client token.'));
  }
  const code = error && error.problem && error.problem.code ? ` (${error.problem.code})` : '';
  return notice('error', `${error.message}${code}`);
}

/** The form's named values, as strings (checkboxes as booleans). */
export function values(form) {
  const out = {};
  for (const element of form.elements) {
    if (!element.name) continue;
    out[element.name] = element.type === 'checkbox' ? element.checked : element.value.trim();
  }
  return out;
}

/** A button that runs `action`, disabled while it runs, showing what went wrong in `place`. */
export function action(label, run, attrs = {}) {
  const button = h('button', { type: 'button', ...attrs }, label);
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      await run();
    } catch (error) {
      button.after(failure(error));
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

/** A list split by commas or lines; an empty text is `null` (no list). */
export function list(text) {
  const items = text.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);
  return items.length ? items : null;
}
