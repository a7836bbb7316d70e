// Field reads in the browser: one page with the packed eddy-sync package creates a task, then
// times loops of 100,000 reads of one of its fields (`task.title`, a string, and `task.done`, a
// boolean), seven loops each; prints the median and fastest loop in milliseconds and the median
// per read. Each read checks the value, so the loop cannot be optimised away. Nothing changes the
// store during the loops, so after the first read each one is served by the value the object's
// proxy keeps until the next change (the first read after a change costs one wasm call).
//
// Run it by hand against a built package (not part of ./dev test):
//   EDDY_BIN=target/release/eddy EDDY_PKG_DIR=wasm/pkg node --test tests/browser/reads.bench.mjs

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import {
  CHROMIUM_FLAGS, required, installPackedPackage, startServer, openPage,
} from "./support.mjs";

const READS = 100_000;
const LOOPS = 7;

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>eddy-sync field read benchmark</title>
<link rel="icon" href="data:,">
<script type="module">
import init, { App, Credentials, Eddy } from "./node_modules/eddy-sync/eddy_sync.js";
window.ready = (async () => {
  await init();
  const app = new App({ id: "reads-bench", baseUrl: location.origin });
  const user = await app.logIn(Credentials.anonymous());
  const db = await Eddy.open({
    schema: [{ name: "Task", primaryKey: "_id",
               properties: { _id: "objectId", title: "string", done: "bool" } }],
    sync: { user, flexible: true },
  });
  let task;
  await db.write(() => { task = db.create("Task", { title: "read me", done: true }); });
  // Loops of n reads of one field; returns each loop's milliseconds.
  window.time = (field, expected, n, loops) => {
    const times = [];
    for (let l = 0; l < loops; l++) {
      let same = 0;
      const start = performance.now();
      for (let i = 0; i < n; i++) if (task[field] === expected) same++;
      times.push(performance.now() - start);
      if (same !== n) throw new Error(field + " read " + same + " times as expected, not " + n);
    }
    return times;
  };
})();
</script>
`;

test("field reads of a live object", async (t) => {
  const eddy = required("EDDY_BIN");
  const pkgDir = required("EDDY_PKG_DIR");
  const dir = mkdtempSync(join(tmpdir(), "eddy-reads-bench-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const site = installPackedPackage(pkgDir, dir);
  writeFileSync(join(site, "index.html"), PAGE);
  const { server, url } = await startServer(eddy, dir, site);
  t.after(() => server.kill());
  const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: CHROMIUM_FLAGS });
  t.after(() => browser.close());
  const page = await openPage(browser, `${url}/index.html`, "bench page");
  for (const [field, expected] of [["title", "read me"], ["done", true]]) {
    const times = await page.evaluate(([f, e, n, l]) => window.time(f, e, n, l), [field, expected, READS, LOOPS]);
    assert.equal(times.length, LOOPS);
    const sorted = [...times].sort((a, b) => a - b);
    const median = sorted[Math.floor(LOOPS / 2)];
    console.log(`reads: ${READS} reads of task.${field}: median ${median.toFixed(1)} ms ` +
      `(fastest ${sorted[0].toFixed(1)} ms), ${((median * 1e6) / READS).toFixed(0)} ns per read`);
  }
});
