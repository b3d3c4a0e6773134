// Times the dashboard's overview and usage pages as an operator sees them: each loaded whole in
// headless Chromium (the page, its modules, the sign-in check, every API call, drawn) until its
// last part is on screen. Usage: node bench/dashboard-pages.mjs BASE_URL ADMIN_TOKEN [ROUNDS]

import { chromium } from '../tests/browser/node_modules/playwright-core/index.mjs';

const [base, token, rounds = '20'] = process.argv.slice(2);
const PAGES = {
  overview: '[data-figure="spend-month"]',
  usage: 'table[aria-label="Charges by tenant"]',
};

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = await browser.newPage();
await page.goto(`${base}/dashboard`);
await page.evaluate((t) => sessionStorage.setItem('tollgate.token', t), token);
const quantile = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
for (const [name, ready] of Object.entries(PAGES)) {
  const times = [];
  for (let i = 0; i < Number(rounds) + 2; i += 1) {
    await page.goto('about:blank');
    const started = performance.now();
    await page.goto(`${base}/dashboard#/${name}`);
    await page.locator(ready).waitFor();
    if (i >= 2) times.push(performance.now() - started); // two rounds warm up
  }
  times.sort((a, b) => a - b);
  console.log(`${name} page: ${times.length} loads, p50 ${quantile(times, 0.5).toFixed(1)} ms, p95 ${quantile(times, 0.95).toFixed(1)} ms, max ${times[times.length - 1].toFixed(1)} ms`);
}
await browser.close();
