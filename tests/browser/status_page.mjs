// Drives Debian's headless Chromium through playwright-core against a live
// coordinator's status page, for tests/t88_status_page.rs:
//
//   node tests/browser/status_page.mjs URL SCREENSHOT REGION
//
// 1. loads URL and waits until every region shows healthy, then prints the line
//    `all-healthy` (the test then stops REGION's agent);
// 2. waits (generously: no timing is asserted) until REGION's row turns red;
// 3. writes a full-page screenshot to SCREENSHOT and prints one JSON line
//    describing what the page shows, which the Rust test checks.
//
// It fails (exit 1, with a screenshot of the moment) if the page fetches
// anything from another origin, throws, or logs an error to the console.
// No browser is downloaded: the executable is /usr/bin/chromium (Debian's
// `chromium` package; scripts/install-deps.sh installs it).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const [url, screenshot, region] = process.argv.slice(2);
if (!url || !screenshot || !region) {
  console.error('usage: node status_page.mjs URL SCREENSHOT REGION');
  process.exit(64);
}
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
// Generous: a loaded CI machine may be slow; nothing here measures time.
const WAIT_MS = 90_000;

const origin = new URL(url).origin;
const problems = [];
const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'globallock-chromium-'));
let context;
let page;

try {
  // A persistent context is how Playwright takes a --user-data-dir: a fresh one.
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    // The page is served over TLS by a cluster whose throwaway dev CA this
    // fresh browser profile does not trust; the test is about the page.
    ignoreHTTPSErrors: url.startsWith('https:'),
    viewport: { width: 1280, height: 900 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  page = context.pages()[0] || (await context.newPage());
  page.on('request', (request) => {
    const requested = request.url();
    if (!requested.startsWith(origin + '/') && !requested.startsWith('data:')) {
      problems.push('fetched from another origin: ' + requested);
    }
  });
  page.on('pageerror', (error) => problems.push('page error: ' + error.message));
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push('console error: ' + message.text());
  });

  const response = await page.goto(url, { waitUntil: 'load', timeout: WAIT_MS });
  if (!response || response.status() !== 200) {
    throw new Error('GET ' + url + ' answered ' + (response ? response.status() : 'nothing'));
  }
  await page.waitForSelector('body[data-loaded="true"]', { timeout: WAIT_MS });
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll('tr[data-region]')];
    return rows.length > 0 && rows.every((row) => row.dataset.health === 'healthy');
  }, null, { timeout: WAIT_MS, polling: 200 });
  const regions = await page.$$eval('tr[data-region]', (rows) => rows.map((r) => r.dataset.region));
  if (!regions.includes(region)) throw new Error('no row for ' + region + ' among ' + regions);
  console.log('all-healthy');

  // The test stops the region's agent now; its row must turn red.
  const row = `tr[data-region="${region}"]`;
  await page.waitForSelector(`${row}[data-health="down"]`, { timeout: WAIT_MS });
  // And the page must still be updating (not showing a stale view).
  await page.waitForFunction(() => !document.body.classList.contains('stale'), null, { timeout: WAIT_MS });
  // Let the chart and tables settle on one refresh with the region down.
  await page.waitForTimeout(4000);

  const shown = await page.evaluate((regionName) => {
    const text = (selector) => {
      const node = document.querySelector(selector);
      return node ? node.textContent.trim() : null;
    };
    const regionPill = document.querySelector(`tr[data-region="${regionName}"] .pill`);
    const health = Object.fromEntries(
      [...document.querySelectorAll('tr[data-region]')].map((r) => [r.dataset.region, r.dataset.health]));
    return {
      health,
      down_pill_text: regionPill ? regionPill.textContent.trim() : null,
      down_probe_text: text(`tr[data-region="${regionName}"] td:last-child`),
      down_pill_background: regionPill ? getComputedStyle(regionPill).backgroundColor : null,
      healthy_pill_background: (() => {
        const other = document.querySelector('tr[data-health="healthy"] .pill');
        return other ? getComputedStyle(other).backgroundColor : null;
      })(),
      ready: text('#ready'),
      held: text('#held'),
      held_note: text('#held-note'),
      contended: [...document.querySelectorAll('#contended tbody td.resource')].map((td) => td.textContent),
      rejection_reasons: [...document.querySelectorAll('#rejections tbody tr[data-reason]')]
        .map((tr) => tr.dataset.reason),
      chart_lines: document.querySelectorAll('#chart path.p50').length,
      chart_bars: document.querySelectorAll('#chart rect.count').length,
      latency_stats: text('#latency-stats'),
      stale: document.body.classList.contains('stale'),
    };
  }, region);

  fs.mkdirSync(path.dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot, fullPage: true });
  if (problems.length > 0) throw new Error(problems.join('; '));
  console.log(JSON.stringify(shown));
} catch (error) {
  console.error('status page check failed: ' + (error && error.message ? error.message : error));
  if (problems.length > 0) console.error(problems.join('\n'));
  if (page) {
    try {
      fs.mkdirSync(path.dirname(screenshot), { recursive: true });
      await page.screenshot({ path: screenshot, fullPage: true });
      console.error('screenshot of the failure: ' + screenshot);
    } catch (_) {
      // Nothing more to show.
    }
  }
  process.exitCode = 1;
} finally {
  if (context) await context.close().catch(() => {});
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
