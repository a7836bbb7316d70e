// Bundler test: an app that imports "eddy-sync" by name is bundled by webpack 5 (its
// `asyncWebAssembly` experiment handles the package's `import` of the .wasm file) from the
// `npm pack`ed package, so webpack must pick the bundler build through the package's `exports`
// conditions. The bundle is served by `eddy serve` and loaded in two pages of Debian's headless
// Chromium (driven by playwright-core), which sync a task through the server.
//
// Needs EDDY_BIN (the release `eddy` binary) and EDDY_PKG_DIR (wasm/pkg after `build_package`);
// `./dev test` sets both.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import webpack from "webpack";
import { chromium } from "playwright-core";
import {
  CHROMIUM_FLAGS, STEP_TIMEOUT_MS, required, installPackedPackage, startServer, openPage,
} from "./support.mjs";

// The app imports the package as an app with a bundler would: by name, with no `init()`.
const APP = `
import { App, Credentials, Eddy } from "eddy-sync";

window.ready = (async () => {
  const app = new App({ id: "bundler-test", baseUrl: location.origin });
  const user = await app.logIn(Credentials.anonymous());
  const db = await Eddy.open({
    schema: [{ name: "Note", primaryKey: "_id", properties: { _id: "objectId", text: "string" } }],
    sync: { user, flexible: true,
            initialSubscriptions: { update: (subs, db) => subs.add(db.objects("Note")) } },
  });
  window.add = (text) => db.write(() => { db.create("Note", { text }); });
  window.settle = async () => {
    await db.syncSession.uploadAllLocalChanges();
    await db.syncSession.downloadAllServerChanges();
  };
  window.texts = () => [...db.objects("Note").sorted("text")].map((n) => n.text);
})();
`;

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>eddy-sync bundler test</title>
<link rel="icon" href="data:,">
<script src="app.js"></script>
`;

function bundle(site) {
  const compiler = webpack({
    mode: "production",
    context: site,
    entry: "./src/app.js",
    output: { path: join(site, "dist"), filename: "app.js", clean: true },
    experiments: { asyncWebAssembly: true },
    performance: { hints: false },
  });
  return new Promise((resolve, reject) => {
    compiler.run((error, stats) => {
      compiler.close(() => {});
      if (error) return reject(error);
      if (stats.hasErrors()) return reject(new Error(stats.toString("errors-only")));
      resolve(stats.toJson({ all: false, assets: true, modules: true, nestedModules: true }));
    });
  });
}

test("webpack bundles the packed package's bundler build, and the bundle syncs", async (t) => {
  const eddy = required("EDDY_BIN");
  const pkgDir = required("EDDY_PKG_DIR");
  const dir = mkdtempSync(join(tmpdir(), "eddy-bundler-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));

  const site = installPackedPackage(pkgDir, dir);
  mkdirSync(join(site, "src"));
  writeFileSync(join(site, "src", "app.js"), APP);
  const stats = await bundle(site);
  const modules = (list) => list.flatMap((m) => [m.name ?? "", ...modules(m.modules ?? [])]);
  const bundled = modules(stats.modules);
  assert.ok(bundled.some((name) => name.endsWith("eddy-sync/eddy_sync_bundler.js")),
    `webpack must pick the bundler build through the exports conditions; it bundled ${bundled}`);
  assert.ok(!bundled.some((name) => name.endsWith("eddy-sync/eddy_sync.js")), "and not the web build");
  assert.ok(bundled.some((name) => name.endsWith("eddy-sync/eddy_sync_bg.wasm")),
    "webpack bundles the wasm as a WebAssembly module");
  writeFileSync(join(site, "dist", "index.html"), PAGE);

  const { server, url } = await startServer(eddy, dir, join(site, "dist"));
  t.after(() => server.kill());
  const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: CHROMIUM_FLAGS });
  t.after(() => browser.close());
  const a = await openPage(browser, `${url}/index.html`, "page A");
  const b = await openPage(browser, `${url}/index.html`, "page B");

  await a.evaluate(() => window.add("bundled"));
  const synced = async (page) => {
    await Promise.race([
      page.evaluate(() => window.settle()),
      new Promise((_, reject) => setTimeout(() => reject(new Error("timed out syncing")), STEP_TIMEOUT_MS)),
    ]);
    return page.evaluate(() => window.texts());
  };
  assert.deepEqual(await synced(a), ["bundled"]);
  assert.deepEqual(await synced(b), ["bundled"], "page B sees page A's note through the server");
});
