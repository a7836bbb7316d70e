// End-to-end test of the dev console in Debian's headless Chromium against a real `eddy serve`:
// log in, let a native client connect and write, and check that its session, its UPLOAD and the
// resulting changeset appear within 1 s, and that the changeset opens to its instructions; and let
// a native client ingest, and check that the Ingest page shows its collection's stored count and
// the device's queue within INGEST_MS.
//
// Needs EDDY_BIN (the eddy binary), EDDY_CONSOLE_WRITER (the console_writer example) and
// EDDY_CONSOLE_DIR (the built console). With EDDY_SCREENSHOTS set, saves a screenshot of every
// page into that directory. `./dev test` sets all of this up and runs it.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const WAIT_MS = 30_000;
const LIVE_MS = 1_000;
// The Ingest page polls every 2 s and a device reports its queue at most once a second.
const INGEST_MS = 5_000;
const INGESTED = 250;
const FLAGS = [
  '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
];

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`set ${name}; ./dev test does`);
  return value;
}

/** Resolves with the first stdout line matching `pattern`, or rejects after WAIT_MS. */
function lineMatching(lines, pattern, what) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${what} within ${WAIT_MS} ms`)), WAIT_MS);
    const onLine = (line) => {
      const m = line.match(pattern);
      if (m) {
        clearTimeout(timer);
        lines.off('line', onLine);
        resolve(m);
      }
    };
    lines.on('line', onLine);
  });
}

let dir, server, browser, base;
const adminKey = `console-test-${process.pid}`;
const children = [];

/** Starts `eddy serve` on `listen` over the test's data directory; resolves with its base URL. */
async function startServer(listen) {
  const env = { ...process.env, RUST_LOG: 'warn' };
  delete env.EDDY_ADMIN_KEY;
  server = spawn(required('EDDY_BIN'), ['serve', '--listen', listen, '--data-dir', join(dir, 'data'),
    '--schema', join(dir, 'schema.json'), '--console-dir', required('EDDY_CONSOLE_DIR'),
    '--admin-key', adminKey], { stdio: ['ignore', 'pipe', 'inherit'], env });
  children.push(server);
  const lines = createInterface({ input: server.stdout });
  return (await lineMatching(lines, /^eddy listening on (http:\/\/\S+)$/, 'server address'))[1];
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'eddy-console-'));
  execFileSync(required('EDDY_CONSOLE_WRITER'), ['schema', join(dir, 'schema.json')]);
  base = await startServer('127.0.0.1:0');
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: FLAGS });
});

after(async () => {
  await browser?.close();
  for (const child of children) child.kill('SIGKILL');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function signedIn() {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  await page.goto(`${base}/console`);
  await page.getByTestId('admin-key').fill(adminKey);
  await page.getByTestId('login').click();
  await page.getByTestId('feed-status').filter({ hasText: 'live' }).waitFor({ timeout: WAIT_MS });
  assert.ok(!page.url().includes(adminKey), 'the admin key must never be in a URL');
  return { page, errors };
}

test('a wrong key is refused on the login page', async () => {
  const page = await browser.newPage();
  await page.goto(`${base}/console`);
  await page.getByTestId('admin-key').fill('not-the-key');
  await page.getByTestId('login').click();
  const error = page.getByTestId('login-error');
  await error.waitFor({ timeout: WAIT_MS });
  assert.match(await error.innerText(), /403|admin key/);
  await page.close();
});

/// Opens each row of `rows` in turn (its first button) until the element `detail` inside one
/// matches `pattern`; fails with what every row showed.
async function expandUntil(rows, detail, pattern) {
  const shown = [];
  for (let i = 0; i < await rows.count(); i++) {
    const row = rows.nth(i);
    await row.getByRole('button').first().click();
    const text = row.getByTestId(detail);
    await text.waitFor({ timeout: WAIT_MS });
    const content = await text.innerText();
    if (pattern.test(content)) return;
    shown.push(content);
  }
  assert.fail(`no row showed ${pattern}; they showed:\n${shown.join('\n---\n')}`);
}

test('a native client\'s session, UPLOAD and changeset appear live', async () => {
  const sessions = await signedIn();
  const changesets = await signedIn();
  await sessions.page.getByTestId('nav-sessions').click();
  await changesets.page.getByTestId('nav-changesets').click();

  const writer = spawn(required('EDDY_CONSOLE_WRITER'), ['write', '--addr', new URL(base).host, '--items', '2'], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  children.push(writer);
  const lines = createInterface({ input: writer.stdout });
  const identLine = lineMatching(lines, /^ident (\d+)$/, 'client file ident');
  const ackLine = lineMatching(lines, /^acknowledged (\d+)$/, 'upload acknowledgement');
  const ident = (await identLine)[1];
  await ackLine;
  const acknowledged = Date.now();

  const sessionRow = sessions.page.getByTestId('session-row').filter({
    has: sessions.page.getByTestId('session-client').getByText(ident, { exact: true }),
  });
  const changesetRow = changesets.page.getByTestId('changeset-row').filter({ hasText: `client ${ident}` });
  await Promise.all([
    sessionRow.waitFor({ timeout: LIVE_MS }),
    changesetRow.first().waitFor({ timeout: LIVE_MS }),
  ]);
  const shownAfter = Date.now() - acknowledged;

  // The client's first changeset is its declared schema, so its writes may be in a later UPLOAD
  // and changeset: open each until one shows them.
  await sessionRow.click();
  const uploads = sessions.page.getByTestId('message-UPLOAD');
  await uploads.first().waitFor({ timeout: LIVE_MS });
  await expandUntil(uploads, 'message-decoded', /Set Item\[\d\]\.n = \d/);
  const changesetItems = changesets.page.getByTestId('changeset').filter({ hasText: `client ${ident}` });
  await expandUntil(changesetItems, 'changeset-instructions',
    /CreateObject Item\[\d\][\s\S]*Set Item\[\d\]\.n = \d/);
  console.log(`# session and changeset shown ${shownAfter} ms after the upload was acknowledged`);

  const shots = process.env.EDDY_SCREENSHOTS;
  if (shots) {
    mkdirSync(shots, { recursive: true });
    await sessions.page.screenshot({ path: join(shots, 'sessions.png'), fullPage: true });
    await changesets.page.screenshot({ path: join(shots, 'changesets.png'), fullPage: true });
    const page = sessions.page;
    // A steady Data Ingest, so the overview's ingest chart and the Ingest page have figures.
    writer.stdin.write('ingest\n');
    await page.getByTestId('nav-overview').click();
    // A few one-second samples so the charts have a line.
    await page.waitForFunction(
      () => [...document.querySelectorAll('polyline')].every((p) => p.getAttribute('points').split(' ').length >= 6),
      null, { timeout: WAIT_MS });
    await page.screenshot({ path: join(shots, 'overview.png'), fullPage: true });
    await page.getByTestId('nav-data').click();
    await page.getByTestId('collection-row').first().click();
    await page.getByTestId('document').first().click();
    await page.getByTestId('document-history').locator('ol.timeline').waitFor({ timeout: WAIT_MS });
    await page.screenshot({ path: join(shots, 'data.png'), fullPage: true });
    await page.getByTestId('nav-schema').click();
    await page.getByTestId('schema').waitFor({ timeout: WAIT_MS });
    await page.screenshot({ path: join(shots, 'schema.png'), fullPage: true });
    await page.getByTestId('nav-ingest').click();
    await page.getByTestId('ingest-client-row').first().waitFor({ timeout: WAIT_MS });
    await page.screenshot({ path: join(shots, 'ingest.png'), fullPage: true });
    const login = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    await login.goto(`${base}/console`);
    await login.getByTestId('admin-key').waitFor({ timeout: WAIT_MS });
    await login.screenshot({ path: join(shots, 'login.png') });
  }
  writer.stdin.end();
  assert.deepEqual([...sessions.errors, ...changesets.errors], [], 'the console threw in the page');
});

/** The stored count of an asymmetric collection, from the admin API. */
async function storedCount(collection) {
  const response = await fetch(`${base}/api/admin/collections`, { headers: { 'x-eddy-admin-key': adminKey } });
  assert.equal(response.status, 200, 'the admin API lists collections');
  const found = (await response.json()).find((c) => c.name === collection);
  return found ? found.count : 0;
}

test('the Ingest page shows a device\'s stored objects and queue', async () => {
  const { page, errors } = await signedIn();
  await page.getByTestId('nav-ingest').click();
  await page.getByTestId('page-ingest').waitFor({ timeout: WAIT_MS });
  const before = await storedCount('Reading');

  const writer = spawn(required('EDDY_CONSOLE_WRITER'), ['ingest', '--addr', new URL(base).host,
    '--objects', String(INGESTED), '--file', join(dir, 'device.eddy')], { stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(writer);
  const lines = createInterface({ input: writer.stdout });
  const identLine = lineMatching(lines, /^ident (\d+)$/, 'client file ident');
  const storedLine = lineMatching(lines, /^stored (\d+)$/, 'ingest acknowledgement');
  const ident = (await identLine)[1];
  await storedLine;
  const stored = Date.now();
  const expected = before + INGESTED;

  // Both tables must agree with what was ingested: the collection's count, and the device's row
  // with its queue reported (drained: everything was acknowledged) and its stored objects.
  try {
    await page.waitForFunction(({ ident, expected, ingested }) => {
      const cell = (row, id) => row.querySelector(`[data-testid=${id}]`)?.textContent.trim();
      const collection = [...document.querySelectorAll('[data-testid=ingest-collection-row]')]
        .find((r) => r.firstElementChild?.textContent === 'Reading');
      const device = [...document.querySelectorAll('[data-testid=ingest-client-row]')]
        .find((r) => cell(r, 'ingest-client') === ident && r.firstElementChild?.textContent === 'Reading');
      return collection && cell(collection, 'stored-count') === String(expected)
        && device && cell(device, 'queued') === '0' && cell(device, 'stored') === String(ingested)
        && /^[\d.]+ (ms|s) ago$/.test(cell(device, 'reported') ?? '');
    }, { ident, expected, ingested: INGESTED }, { timeout: INGEST_MS });
  } catch (e) {
    const shown = await page.getByTestId('page-ingest').innerText();
    throw new Error(`the Ingest page did not show ${expected} stored Readings and device ${ident}'s `
      + `queue (0 queued, ${INGESTED} stored) within ${INGEST_MS} ms of the acknowledgement; it shows:\n${shown}`,
    { cause: e });
  }
  console.log(`# Ingest page showed the device's ${INGESTED} objects and queue ${Date.now() - stored} ms after the acknowledgement`);
  const exited = new Promise((resolve) => writer.once('exit', resolve));
  writer.stdin.end();
  await exited;

  // The device is gone for good: forgetting it removes its rows, and the collection keeps its count.
  const row = page.getByTestId('ingest-client-row').filter({
    has: page.getByTestId('ingest-client').getByText(ident, { exact: true }),
  });
  await row.first().getByTestId('forget-device').click();
  await row.first().waitFor({ state: 'detached', timeout: WAIT_MS });
  assert.equal(await storedCount('Reading'), expected);
  assert.deepEqual(errors, [], 'the console threw in the page');
  await page.close();
});

test('the feed reconnects by itself when the server restarts', async () => {
  const { page, errors } = await signedIn();
  const status = page.getByTestId('feed-status');
  const stopped = new Promise((resolve) => server.once('exit', resolve));
  server.kill('SIGTERM');
  await stopped;
  await status.filter({ hasText: 'reconnecting' }).waitFor({ timeout: WAIT_MS });
  await startServer(new URL(base).host);
  await status.filter({ hasText: 'live' }).waitFor({ timeout: WAIT_MS });
  await page.getByTestId('nav-sessions').click();
  await page.getByTestId('page-sessions').waitFor({ timeout: WAIT_MS });
  assert.deepEqual(errors, [], 'the console threw in the page');
  await page.close();
});

test('a changeset older than the feed\'s history opens from the server\'s history', async () => {
  // The restart above emptied the feed's ring, so the timeline holds none of the earlier changesets:
  // open the one that wrote Item 1 in the first test.
  const response = await fetch(`${base}/api/admin/collections/Item/history?key=1`,
    { headers: { 'x-eddy-admin-key': adminKey } });
  assert.equal(response.status, 200, 'the admin API reads a document history');
  const history = await response.json();
  assert.ok(history.length > 0, 'the first test wrote Item 1');
  const version = history[history.length - 1].server_version;
  const { page, errors } = await signedIn();
  await page.getByTestId('nav-changesets').click();
  await page.getByTestId('filter-version').fill(`v${version}`);
  const stored = page.getByTestId('stored-changeset');
  await stored.getByTestId('changeset-instructions').waitFor({ timeout: WAIT_MS });
  const text = await stored.innerText();
  assert.match(text, new RegExp(`v${version} from client \\d+`));
  assert.match(text, /Read from the server's history/);
  assert.match(await stored.getByTestId('changeset-instructions').innerText(), /Set Item\[1\]\.n = 1/);
  await page.getByTestId('filter-version').fill(`v${version + 1000}`);
  await stored.getByTestId('load-error').waitFor({ timeout: WAIT_MS });
  assert.match(await stored.getByTestId('load-error').innerText(), /no changeset at server version/);
  assert.deepEqual(errors, [], 'the console threw in the page');
  await page.close();
});
