// The entry of eddy-sync's bundler build (package.json `exports`, condition "webpack", and
// `eddy-sync/bundler`): wasm-bindgen's bundler glue, whose `import` of the .wasm file the bundler
// resolves, so the module is ready once imported. `init` and `initSync` do nothing here; they
// exist so code written for the web build (`await init()`) runs unchanged.

export * from "./eddy_sync_bundler_start.js";

export default async function init() {}

export function initSync() {}
