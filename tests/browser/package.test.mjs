// Packaging test: the built eddy-sync package is packed with `npm pack`, installed into a plain
// directory with `npm install`, imported by a plain HTML page (no build step) that `eddy serve`
// serves, and driven in Debian's headless Chromium by playwright-core: two pages (separate
// browser contexts, so separate IndexedDB and Web Locks) sync tasks through the server. It also
// reports the write->visible latency between the two pages.
//
// Needs EDDY_BIN (the release `eddy` binary) and EDDY_PKG_DIR (wasm/pkg after `wasm-pack build`);
// `./dev test` sets both.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import {
  CHROMIUM_FLAGS, STEP_TIMEOUT_MS, required, installPackedPackage, startServer, openPage,
} from "./support.mjs";

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>eddy-sync packaging test</title>
<link rel="icon" href="data:,">
<script type="module">
import init, { App, Credentials, Eddy } from "./node_modules/eddy-sync/eddy_sync.js";
const now = () => performance.timeOrigin + performance.now();
window.ready = (async () => {
  await init();
  const app = new App({ id: "package-test", baseUrl: location.origin });
  const user = await app.logIn(Credentials.anonymous());
  const db = await Eddy.open({
    schema: [{ name: "Task", primaryKey: "_id",
               properties: { _id: "objectId", title: "string", sent: "double" } }],
    sync: { user, flexible: true,
            initialSubscriptions: { update: (subs, db) => subs.add(db.objects("Task")) } },
  });
  const seen = new Map();
  const waiting = new Map();
  db.objects("Task").addListener((tasks) => {
    const at = now();
    for (const task of tasks) {
      if (seen.has(task.title)) continue;
      seen.set(task.title, at - task.sent);
      waiting.get(task.title)?.();
    }
  });
  window.addTask = (title) => db.write(() => db.create("Task", { title, sent: now() }));
  window.latencyOf = (title, ms) => new Promise((resolve, reject) => {
    if (seen.has(title)) return resolve(seen.get(title));
    const timer = setTimeout(() => reject(new Error("timed out waiting for " + title)), ms);
    waiting.set(title, () => { clearTimeout(timer); resolve(seen.get(title)); });
  });
  window.count = () => db.objects("Task").length;
  // Persisting n objects through eddy-sync (one write, durable when it resolves) against raw
  // IndexedDB bulk put of the same objects in this page. Raw goes first: eddy-sync writes its
  // object records in a checkpoint after the write resolves, which must not overlap the raw run.
  window.bench = async (n) => {
    const items = Array.from({ length: n }, (_, i) => ({ title: "bench " + i, sent: i }));
    const raw = await new Promise((resolve, reject) => {
      const open = indexedDB.open("raw-bench", 1);
      open.onupgradeneeded = () => open.result.createObjectStore("items");
      open.onsuccess = () => resolve(open.result);
      open.onerror = () => reject(open.error);
    });
    let start = now();
    await new Promise((resolve, reject) => {
      const tx = raw.transaction("items", "readwrite");
      const store = tx.objectStore("items");
      items.forEach((item, i) => store.put(item, i));
      tx.oncomplete = resolve;
      tx.onerror = () => reject(tx.error);
    });
    const rawMs = now() - start;
    raw.close();
    start = now();
    await db.write(() => { for (const item of items) db.create("Task", item); });
    const eddyMs = now() - start;
    return { eddyMs, rawMs };
  };
  window.settle = async () => {
    await db.syncSession.uploadAllLocalChanges();
    await db.syncSession.downloadAllServerChanges();
  };
  return user.id;
})();
</script>
`;

test("the packed package syncs two pages through the server", async (t) => {
  const eddy = required("EDDY_BIN");
  const pkgDir = required("EDDY_PKG_DIR");
  const dir = mkdtempSync(join(tmpdir(), "eddy-package-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));

  const site = installPackedPackage(pkgDir, dir);
  writeFileSync(join(site, "index.html"), PAGE);

  const { server, url } = await startServer(eddy, dir, site);
  t.after(() => server.kill());
  const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: CHROMIUM_FLAGS });
  t.after(() => browser.close());

  const pages = [];
  for (let i = 0; i < 2; i++) pages.push(await openPage(browser, `${url}/index.html`, `page ${i}`));
  const [a, b] = pages;

  await a.evaluate(() => window.addTask("first"));
  const first = await b.evaluate((ms) => window.latencyOf("first", ms), STEP_TIMEOUT_MS);
  assert.ok(first >= 0, "B sees A's task");
  await b.evaluate(() => window.addTask("reply"));
  await a.evaluate((ms) => window.latencyOf("reply", ms), STEP_TIMEOUT_MS);

  const latencies = [];
  for (let i = 0; i < 30; i++) {
    const title = `round ${i}`;
    await a.evaluate((title) => window.addTask(title), title);
    latencies.push(await b.evaluate(([title, ms]) => window.latencyOf(title, ms), [title, STEP_TIMEOUT_MS]));
  }
  latencies.sort((x, y) => x - y);
  const p50 = latencies[Math.floor(latencies.length / 2)];
  const p95 = latencies[Math.floor(latencies.length * 0.95)];
  console.log(`write->visible latency between two pages: p50 ${p50.toFixed(1)} ms, p95 ${p95.toFixed(1)} ms (30 writes)`);

  await a.evaluate(() => window.settle());
  await b.evaluate(() => window.settle());
  assert.equal(await a.evaluate(() => window.count()), 32);
  assert.equal(await b.evaluate(() => window.count()), 32);

  const n = 10_000;
  const { eddyMs, rawMs } = await a.evaluate((n) => window.bench(n), n);
  console.log(`persisting ${n} objects: eddy-sync ${eddyMs.toFixed(0)} ms, raw IndexedDB put ${rawMs.toFixed(0)} ms ` +
    `(eddy-sync at ${(rawMs / eddyMs).toFixed(2)}x raw throughput)`);
  assert.equal(await a.evaluate(() => window.count()), 32 + n);
});
