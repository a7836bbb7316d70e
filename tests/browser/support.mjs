// Helpers shared by the end-to-end tests of the eddy-sync package: Chromium's flags, required
// environment variables, `npm pack` + install of the built package into a site directory, and a
// release `eddy serve` on a free port serving that site.

import { spawn, execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import assert from "node:assert/strict";

/** Flags for Debian's headless Chromium (see shared/TOOLCHAIN.md). */
export const CHROMIUM_FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--no-first-run", "--disable-quic",
];

/** How long any awaited step may take before a test fails. */
export const STEP_TIMEOUT_MS = 20_000;

/** The environment variable `name`, or an error saying how to run the test. */
export function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this test through ./dev test`);
  return value;
}

/** Packs the package in `pkgDir` with `npm pack` and installs it into a new `site` directory
 * under `dir`, as an app would; returns the site's path. */
export function installPackedPackage(pkgDir, dir) {
  const packed = execFileSync("npm", ["pack", "--silent", "--pack-destination", dir], { cwd: pkgDir })
    .toString().trim().split("\n").pop();
  assert.match(packed, /^eddy-sync-.*\.tgz$/, "the packed package must be named eddy-sync");
  const site = join(dir, "site");
  mkdirSync(site);
  writeFileSync(join(site, "package.json"), JSON.stringify({ private: true }));
  execFileSync("npm", ["install", "--silent", "--no-audit", "--no-fund", join(dir, packed)], { cwd: site });
  return site;
}

/** Starts `eddy serve` on a free port with its data in `dir`, serving `www` at `/`, with any
 * `extra` flags. */
export async function startServer(eddy, dir, www, extra = []) {
  const server = spawn(eddy, ["serve", "--listen", "127.0.0.1:0", "--data-dir", join(dir, "data"),
    "--www-dir", www, ...extra], { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  server.stderr.on("data", (d) => { stderr += d; });
  const url = await new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`eddy did not start: ${stderr}`)), STEP_TIMEOUT_MS);
    server.stdout.on("data", (d) => {
      out += d;
      const match = out.match(/^eddy listening on (\S+)$/m);
      if (match) { clearTimeout(timer); resolve(match[1]); }
    });
    server.on("exit", (code) => reject(new Error(`eddy exited with ${code}: ${stderr}`)));
  });
  return { server, url };
}

/** Opens `url` in a new browser context (its own IndexedDB and Web Locks), forwarding the page's
 * errors and warnings to stderr, and waits for `window.ready`. */
export async function openPage(browser, url, label) {
  const page = await (await browser.newContext()).newPage();
  page.on("pageerror", (e) => console.error(`${label}: ${e.message}`));
  page.on("console", (m) => { if (m.type() !== "log" && m.type() !== "info") console.error(`${label}: ${m.text()}`); });
  await page.goto(url);
  // A bundled app's module body can run after the load event (webpack instantiates the wasm
  // first), so wait for it to set window.ready before awaiting it.
  await page.waitForFunction(() => window.ready !== undefined, null, { timeout: STEP_TIMEOUT_MS });
  await page.evaluate(() => window.ready);
  return page;
}
