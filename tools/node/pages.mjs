// Opens pmcore's reference pages in headless Chromium (Debian's) as a person would, with
// no network beyond this machine, and checks that they render what they describe.
//
//   node pages.mjs OUT_DIR 'name|url|text;text;...' ...
//
// Each page must show every listed text once rendered; any request to a host other than
// loopback is refused and fails the check (grid operators' networks are often isolated,
// so a page that needs a CDN is a blank page there). A screenshot of each page goes to
// OUT_DIR/<name>.png.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [outDir, ...specs] = process.argv.slice(2);
if (!outDir || specs.length === 0) {
  console.error("usage: node pages.mjs OUT_DIR 'name|url|text;text' ...");
  process.exit(2);
}
mkdirSync(outDir, { recursive: true });

const local = (url) => {
  const { protocol, hostname } = new URL(url);
  if (protocol === 'file:' || protocol === 'data:' || protocol === 'blob:') return true;
  return ['127.0.0.1', 'localhost', '[::1]'].includes(hostname);
};

const browser = await chromium.launch({
  executablePath: process.env.PMCORE_CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
let failed = 0;
for (const spec of specs) {
  const [name, url, texts = ''] = spec.split('|');
  const wanted = texts.split(';').filter(Boolean);
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  const outside = [];
  const errors = [];
  await page.route('**/*', (route) => {
    const target = route.request().url();
    if (local(target)) return route.continue();
    outside.push(target);
    return route.abort('blockedbyclient');
  });
  page.on('pageerror', (e) => errors.push(String(e)));
  let missing = wanted;
  try {
    await page.goto(url, { waitUntil: 'load', timeout: 30_000 });
    // Rendering is client-side: wait until every wanted text is in the page, or give up.
    const deadline = Date.now() + 30_000;
    for (;;) {
      const body = await page.evaluate(() => document.body?.innerText ?? '');
      missing = wanted.filter((t) => !body.includes(t));
      if (missing.length === 0 || Date.now() > deadline) break;
      await page.waitForTimeout(250);
    }
  } catch (e) {
    errors.push(String(e));
  }
  const shot = join(outDir, `${name}.png`);
  await page.screenshot({ path: shot, fullPage: false }).catch((e) => errors.push(String(e)));
  const problems = [];
  if (missing.length) problems.push(`not rendered: ${missing.join(', ')}`);
  if (outside.length) problems.push(`asked beyond loopback: ${[...new Set(outside)].join(', ')}`);
  if (errors.length) problems.push(`errors: ${errors.join(' | ')}`);
  if (problems.length) {
    failed += 1;
    console.error(`FAIL ${name} (${url}): ${problems.join('; ')}; screenshot ${shot}`);
  } else {
    console.log(`ok   ${name}: ${wanted.length} texts rendered offline; screenshot ${shot}`);
  }
  await context.close();
}
await browser.close();
process.exit(failed ? 1 : 0);
