// Data Ingest in the browser: one page with the packed eddy-sync package ingests N small (~100
// bytes) sensor readings into an asymmetric collection (`db.ingest`), then writes the same
// readings into an ordinary synced collection, in commits of 100; each path is timed from its
// first write until the server acknowledged the last upload (`uploadAllLocalChanges`, which
// resolves once the server has made the uploads durable). Prints objects per second for both and
// their ratio, and checks that the server holds exactly N of each and the device queue is empty.
//
// `./dev bench` runs it with 20,000 readings; `./dev test` runs it with a few hundred so that it
// keeps working (it asserts counts, not speed). Needs EDDY_BIN and EDDY_PKG_DIR like
// package.test.mjs; EDDY_INGEST_OBJECTS sets N.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { chromium } from "playwright-core";
import {
  CHROMIUM_FLAGS, STEP_TIMEOUT_MS, required, installPackedPackage, startServer, openPage,
} from "./support.mjs";

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>eddy-sync Data Ingest benchmark</title>
<link rel="icon" href="data:,">
<script type="module">
import init, { App, Credentials, Eddy } from "./node_modules/eddy-sync/eddy_sync.js";
const reading = { _id: "int", sensor: "string", celsius: "double", humidity: "double", at: "int" };
window.ready = (async () => {
  await init();
  const app = new App({ id: "ingest-bench", baseUrl: location.origin });
  const user = await app.logIn(Credentials.anonymous());
  const db = await Eddy.open({
    schema: [
      { name: "Reading", primaryKey: "_id", asymmetric: true, properties: reading },
      { name: "SyncedReading", primaryKey: "_id", properties: reading },
    ],
    sync: { user, flexible: true,
            initialSubscriptions: { update: (subs, db) => subs.add(db.objects("SyncedReading")) } },
  });
  await db.syncSession.uploadAllLocalChanges();
  await db.syncSession.downloadAllServerChanges();
  const values = (n) => ({
    _id: n,
    sensor: "greenhouse-" + String(n % 97).padStart(3, "0"),
    celsius: 18 + (n % 100) / 10,
    humidity: 0.4 + (n % 50) / 100,
    at: 1800000000000 + n,
  });
  // Writes n readings in commits of batch through put, then waits until the server has made
  // every upload durable; returns the milliseconds that took.
  const run = async (n, batch, put) => {
    const start = performance.now();
    const commits = [];
    for (let first = 0; first < n; first += batch) {
      const end = Math.min(first + batch, n);
      commits.push(db.write(() => { for (let k = first; k < end; k++) put(values(k)); }));
    }
    await Promise.all(commits);
    await db.syncSession.uploadAllLocalChanges();
    return performance.now() - start;
  };
  window.ingest = (n, batch) => run(n, batch, (v) => db.ingest("Reading", v));
  window.sync = (n, batch) => run(n, batch, (v) => db.create("SyncedReading", v));
  window.queue = () => db.syncSession.ingestQueue.objects;
  window.synced = () => db.objects("SyncedReading").length;
  return user.id;
})();
</script>
`;

/** The number of documents the server holds durably in each collection (admin API). */
async function serverCounts(url, adminKey) {
  const response = await fetch(`${url}/api/admin/collections`, { headers: { "x-eddy-admin-key": adminKey } });
  assert.equal(response.status, 200, "the admin API answers");
  return Object.fromEntries((await response.json()).map((c) => [c.name, c.count]));
}

test("Data Ingest from a browser against the synced path, until durable on the server", async (t) => {
  const eddy = required("EDDY_BIN");
  const pkgDir = required("EDDY_PKG_DIR");
  const n = Number(process.env.EDDY_INGEST_OBJECTS ?? 500);
  assert.ok(Number.isInteger(n) && n > 0, "EDDY_INGEST_OBJECTS must be a positive integer");
  const batch = 100;
  const dir = mkdtempSync(join(tmpdir(), "eddy-ingest-bench-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));

  const site = installPackedPackage(pkgDir, dir);
  writeFileSync(join(site, "index.html"), PAGE);
  const adminKey = randomBytes(16).toString("hex");
  const { server, url } = await startServer(eddy, dir, site, ["--admin-key", adminKey]);
  t.after(() => server.kill());
  const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: CHROMIUM_FLAGS });
  t.after(() => browser.close());
  const page = await openPage(browser, `${url}/index.html`, "bench page");
  // Big runs take longer than one step may: allow a millisecond per reading on top.
  const within = (promise, what) => {
    let timer;
    const ms = STEP_TIMEOUT_MS + n;
    const late = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms);
    });
    return Promise.race([promise, late]).finally(() => clearTimeout(timer));
  };

  const ingestMs = await within(page.evaluate(([n, batch]) => window.ingest(n, batch), [n, batch]),
    "ingesting until durable");
  const syncedMs = await within(page.evaluate(([n, batch]) => window.sync(n, batch), [n, batch]),
    "syncing until durable");
  const ingestRate = (n * 1000) / ingestMs;
  const syncedRate = (n * 1000) / syncedMs;
  console.log(`browser ingest: ${n} readings into asymmetric "Reading" in commits of ${batch}: ` +
    `${ingestRate.toFixed(0)} objects/s until durable`);
  console.log(`browser ingest: the same readings into synced "SyncedReading": ${syncedRate.toFixed(0)} objects/s until durable`);
  console.log(`browser ingest: Data Ingest is ${(ingestRate / syncedRate).toFixed(2)}x the bidirectional path`);

  // Exactly n of each on the server, each once; nothing left in the device's queue, and no
  // reading readable on the device.
  const counts = await serverCounts(url, adminKey);
  assert.equal(counts.Reading, n, "the server holds every ingested reading exactly once");
  assert.equal(counts.SyncedReading, n, "the server holds every synced reading");
  assert.equal(await page.evaluate(() => window.queue()), 0, "the device's ingest queue is empty");
  assert.equal(await page.evaluate(() => window.synced()), n, "the device holds its synced readings");
});
