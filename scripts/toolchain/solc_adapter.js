#!/usr/bin/env node
// A native-solc-compatible front end over solcjs (npm "solc"), for py-solc-x and brownie.
// Supports exactly what py-solc-x uses: `--version` and `--standard-json` (JSON on stdin, JSON on stdout),
// with `--allow-paths`/`--base-path` honoured by the import callback that reads sources from disk.
"use strict";
const fs = require("fs");
const path = require("path");

const projectRoot = process.env.BACKSTOP_ROOT || path.resolve(__dirname, "..", "..");
const solc = require(path.join(projectRoot, "node_modules", "solc"));

function fail(message) {
  process.stderr.write(`solc-adapter: ${message}\n`);
  process.exit(1);
}

const args = process.argv.slice(2);
if (args.includes("--version")) {
  // py-solc-x parses "Version: X.Y.Z+commit..." from this line.
  process.stdout.write(`solc, the solidity compiler commandline interface (solcjs adapter)\nVersion: ${solc.version()}\n`);
  process.exit(0);
}
if (!args.includes("--standard-json")) fail(`only --version and --standard-json are supported, got: ${args.join(" ")}`);

const searchRoots = [process.cwd(), projectRoot];
for (let i = 0; i < args.length; i++) {
  if ((args[i] === "--allow-paths" || args[i] === "--base-path" || args[i] === "--include-path") && args[i + 1]) {
    for (const p of args[i + 1].split(",")) if (p) searchRoots.push(path.resolve(p));
    i++;
  }
}

function findImports(importPath) {
  const candidates = path.isAbsolute(importPath) ? [importPath] : searchRoots.map((root) => path.join(root, importPath));
  for (const candidate of candidates) {
    try {
      return { contents: fs.readFileSync(candidate, "utf8") };
    } catch (_) { /* try the next root */ }
  }
  return { error: `File not found: ${importPath} (searched ${searchRoots.join(", ")})` };
}

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  if (!input.trim()) fail("empty standard-json input on stdin");
  process.stdout.write(solc.compile(input, { import: findImports }));
});
