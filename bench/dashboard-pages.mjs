// Times the dashboard's overview and usage pages as an operator sees them, by the page's own
// clock, until the shell marks the page ready (everything it first reads is drawn):
// - loaded: a fresh navigation to the page (the document, its modules, every API call, drawn);
// - switched: from the other page by its link, as an operator moves between them (only the
//   page's own API calls and drawing).
// Usage: node bench/dashboard-pages.mjs BASE_URL ADMIN_TOKEN [ROUNDS]

import { chromium } from '../tests/browser/node_modules/playwright-core/index.mjs';

const [base, token, rounds = '20'] = process.argv.slice(2);
const PAGES = ['overview', 'usage'];
const WARM_UP = 2;

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = await browser.newPage();
await page.goto(`${base}/dashboard`);
await page.evaluate((t) => sessionStorage.setItem('tollgate.token', t), token);

const ready = (name) => page.locator(`.page[data-page="${name}"][data-ready]`).waitFor();
const quantile = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
function report(what, times) {
  times.sort((a, b) => a - b);
  console.log(`${what}: ${times.length} times, p50 ${quantile(times, 0.5).toFixed(1)} ms, p95 ${quantile(times, 0.95).toFixed(1)} ms, max ${times[times.length - 1].toFixed(1)} ms`);
}

for (const name of PAGES) {
  const times = [];
  for (let i = 0; i < Number(rounds) + WARM_UP; i += 1) {
    await page.goto('about:blank');
    await page.goto(`${base}/dashboard#/${name}`);
    await ready(name);
    const took = await page.evaluate(() => performance.getEntriesByName('dashboard-ready').at(-1).startTime);
    if (i >= WARM_UP) times.push(took);
  }
  report(`${name} page loaded`, times);
}

const switched = Object.fromEntries(PAGES.map((name) => [name, []]));
for (let i = 0; i < Number(rounds) + WARM_UP; i += 1) {
  for (const name of PAGES) {
    const took = page.evaluate((to) => new Promise((resolve) => {
      const start = performance.now();
      new PerformanceObserver((list, observer) => {
        observer.disconnect();
        resolve(list.getEntries()[0].startTime - start);
      }).observe({ type: 'mark' });
      document.querySelector(`#nav a[data-page="${to}"]`).click();
    }), name);
    await ready(name);
    const ms = await took;
    if (i >= WARM_UP) switched[name].push(ms);
  }
}
for (const name of PAGES) report(`${name} page switched to`, switched[name]);
await browser.close();
