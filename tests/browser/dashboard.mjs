// The dashboard end to end in headless Chromium (Debian's), driven by playwright-core, against
// a gateway the Rust test started (api and worker in-process on real Postgres and RabbitMQ):
// sign in, switch the active provider and see the API agree, make a token and see it once,
// submit a batch and watch it reach 100 %, see the day's usage charted, and a client token
// refused the admin pages. A failed step leaves a screenshot under SCREENSHOTS.
//
// Env: DASHBOARD_URL (the api's base URL), ADMIN_TOKEN, CLIENT_TOKEN, SCREENSHOTS (a folder),
// TENANT (a tenant whose page gets the new token; `acme`).

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const base = process.env.DASHBOARD_URL;
const admin = process.env.ADMIN_TOKEN;
const client = process.env.CLIENT_TOKEN;
const shots = process.env.SCREENSHOTS;
const tenant = process.env.TENANT || 'acme';
const STEP_TIMEOUT = 30_000;

async function api(path, token, init = {}) {
  const response = await fetch(`${base}${path}`, { ...init, headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', ...(init.headers || {}) } });
  return { status: response.status, body: await response.json().catch(() => null) };
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const context = await browser.newContext();
const page = await context.newPage();
page.setDefaultTimeout(STEP_TIMEOUT);
const problems = [];
page.on('console', (message) => {
  if (message.type() === 'error') problems.push(message.text());
});
page.on('pageerror', (error) => problems.push(String(error)));

let step = 'start';
async function run(name, body) {
  step = name;
  process.stdout.write(`dashboard: ${name}\n`);
  await body();
}

async function signIn(token) {
  await page.goto(`${base}/dashboard`);
  await page.getByLabel('Token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#sign-out').waitFor({ state: 'visible' });
}

try {
  await run('the page is served with a strict Content-Security-Policy', async () => {
    const response = await page.goto(`${base}/dashboard`);
    const policy = response.headers()['content-security-policy'] || '';
    assert.match(policy, /default-src 'none'/);
    assert.match(policy, /script-src 'self'/);
    assert.doesNotMatch(policy, /unsafe-inline|unsafe-eval/);
  });

  await run('a bad token is refused at sign-in', async () => {
    await page.getByLabel('Token').fill('tg_not_a_token');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText('That token is not valid').waitFor();
  });

  await run('an admin signs in and sees the overview', async () => {
    await signIn(admin);
    await page.locator('[data-figure="spend-month"]').waitFor();
    await page.getByRole('img', { name: 'Jobs per minute' }).waitFor();
    assert.equal(await page.evaluate(() => window.location.search + window.location.hash.includes('tg_')), 'false', 'the token is never in the URL');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('tollgate.token')), admin);
  });

  await run('switching the active provider shows at once and the API agrees', async () => {
    await page.locator('#nav a[data-page="settings"]').click();
    const active = page.getByLabel('Active provider');
    assert.equal(await active.inputValue(), 'local');
    await active.selectOption('hybrid');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByText('Saved: ai_provider.').waitFor();
    assert.equal(await page.getByLabel('Active provider').inputValue(), 'hybrid');
    const settings = await api('/v1/admin/settings', admin);
    assert.equal(settings.status, 200);
    assert.equal(settings.body.ai_provider, 'hybrid');
    const audit = await api('/v1/admin/audit?limit=5', admin);
    const entry = audit.body.data.find((e) => e.action === 'settings.update');
    assert.ok(entry, 'the change is audited');
    assert.deepEqual(entry.details.ai_provider, { from: 'local', to: 'hybrid' });
    const registry = page.getByRole('table', { name: 'Providers' });
    assert.equal(await registry.getByRole('row').count(), 3, 'a header, the fleet and openai');
    assert.equal(await page.getByLabel('Hybrid cloud').inputValue(), 'openai');
  });

  let made = null;
  await run('a new token is shown once', async () => {
    await page.locator('#nav a[data-page="tenants"]').click();
    await page.getByRole('link', { name: tenant, exact: true }).click();
    const form = page.getByRole('form', { name: 'New token' });
    await form.getByLabel('Name').fill('dashboard-made');
    await form.getByRole('button', { name: 'Create token' }).click();
    made = (await page.locator('code[data-token="new"]').textContent()).trim();
    assert.match(made, /^tg_/);
    assert.equal((await api('/v1/usage', made)).status, 200, 'the token shown works');
    await page.getByRole('cell', { name: 'dashboard-made' }).waitFor();
    await page.reload();
    await page.getByRole('cell', { name: 'dashboard-made' }).waitFor();
    assert.equal(await page.locator('code[data-token="new"]').count(), 0);
    assert.ok(!(await page.content()).includes(made), 'the token is not shown again');
  });

  await run('a batch submitted from the dashboard reaches 100 %', async () => {
    // The batch is the admin's own tenant's ("ops"); its items run on the sim.
    await page.locator('#nav a[data-page="batches"]').click();
    const form = page.getByRole('form', { name: 'New batch' });
    await form.getByLabel('Model').selectOption('llama3');
    await form.getByLabel('Prompts').fill('a tagline for a lamp\na tagline for a chair\na tagline for a desk\na tagline for a rug');
    await form.getByRole('button', { name: 'Submit batch' }).click();
    await page.getByRole('progressbar', { name: 'Batch progress' }).waitFor();
    // Every item done shows 100 % a moment before the dispatcher ends the batch: wait for both.
    await page.locator('.percent', { hasText: '100 %' }).waitFor({ timeout: 60_000 });
    await page.locator('.percent[data-status="completed"]').waitFor({ timeout: 10_000 });
    assert.equal(await page.locator('.percent').textContent(), '100 %');
    await page.getByRole('button', { name: 'Show first results' }).click();
    await page.getByRole('cell', { name: 'line-4' }).waitFor();
  });

  await run("the usage chart shows the day's data", async () => {
    await page.locator('#nav a[data-page="usage"]').click();
    const chart = page.getByRole('img', { name: 'Requests per day' });
    await chart.waitFor();
    const today = new Date().toISOString().slice(5, 10);
    const bar = chart.locator('rect.bar').last();
    assert.ok(Number(await bar.getAttribute('data-value')) >= 4, 'today has the batch\'s requests');
    assert.match(await bar.locator('title').textContent(), new RegExp(`^${today}`));
    await page.getByRole('table', { name: 'Usage by model' }).getByRole('cell', { name: 'llama3' }).waitFor();
    // The test answered one request from acme's response cache before the browser started.
    const byModel = page.getByRole('table', { name: 'Usage by model' });
    await byModel.getByRole('columnheader', { name: 'cache hits' }).waitFor();
    await byModel.getByRole('columnheader', { name: 'saved by the cache' }).waitFor();
    const llama = byModel.getByRole('row').filter({ has: page.getByRole('cell', { name: 'llama3', exact: true }) });
    assert.ok(Number(await llama.getByRole('cell').nth(5).textContent()) >= 1, 'the hit is counted');
  });

  await run('the job list and one job with its provider calls', async () => {
    await page.locator('#nav a[data-page="jobs"]').click();
    await page.getByRole('table', { name: 'Jobs' }).locator('a').first().click();
    await page.getByRole('table', { name: 'Attempts' }).getByRole('cell', { name: 'local' }).first().waitFor();
    assert.doesNotMatch(await page.locator('main').innerText(), /null|undefined/, 'nothing left out is written');
  });

  await run('every other admin page renders', async () => {
    const pages = { 'dead-letters': 'Dead letters', deliveries: 'Webhook deliveries', models: 'Models', prices: 'Prices', audit: 'Audit log' };
    for (const [name, heading] of Object.entries(pages)) {
      await page.locator(`#nav a[data-page="${name}"]`).click();
      await page.getByRole('heading', { name: heading, exact: true }).waitFor();
      await page.locator(`.page[data-page="${name}"][data-ready]`).waitFor();
    }
    await page.locator('#nav a[data-page="models"]').click();
    await page.getByRole('table', { name: 'Installed models' }).getByRole('cell', { name: 'default' }).first().waitFor();
    await page.getByRole('form', { name: 'Pull a model' }).waitFor();
  });

  await run('a client token is refused the admin pages', async () => {
    await page.locator('#sign-out').click();
    await signIn(client);
    assert.equal(await page.locator('#nav a[data-page="settings"]').count(), 0, 'no admin links');
    for (const name of ['settings', 'overview', 'tenants', 'audit']) {
      await page.goto(`${base}/dashboard#/${name}`);
      await page.getByRole('heading', { name: 'Admins only' }).waitFor();
    }
    await page.goto(`${base}/dashboard#/usage`);
    await page.getByRole('img', { name: 'Requests per day' }).waitFor();
    await page.locator('#nav a[data-page="jobs"]').click();
    await page.getByRole('form', { name: 'Filter jobs' }).waitFor();
    assert.equal(await page.getByLabel('Tenant').count(), 0, 'a client chooses no tenant');
    await page.locator('#nav a[data-page="batches"]').click();
    await page.getByRole('form', { name: 'New batch' }).waitFor();
    assert.doesNotMatch(await page.locator('main').innerText(), /null|undefined/, 'nothing left out is written');
    await page.locator('#nav a[data-page="usage"]').click();
    await page.locator('.page[data-page="usage"][data-ready]').waitFor();
    assert.doesNotMatch(await page.locator('main').innerText(), /null|undefined/, 'nothing left out is written');
  });

  await run('no script or style was refused and nothing failed in the page', async () => {
    // The refusals meant to happen (the bad token's 401, the client's 403s) are logged by the
    // browser as failed loads; anything else — a refused script or style, an error — fails.
    const unexpected = problems.filter((p) => !/status of 40[13] /.test(p));
    assert.deepEqual(unexpected, []);
  });
} catch (error) {
  mkdirSync(shots, { recursive: true });
  const file = join(shots, `${step.replace(/[^a-z0-9]+/gi, '-')}.png`);
  await page.screenshot({ path: file, fullPage: true }).catch(() => {});
  process.stderr.write(`dashboard: step "${step}" failed: ${error.stack || error}\nscreenshot: ${file}\n`);
  if (problems.length) process.stderr.write(`page errors: ${problems.join('\n')}\n`);
  await browser.close();
  process.exit(1);
}
await browser.close();
process.stdout.write('dashboard: every step passed\n');
