#!/usr/bin/env node
// SPDX-License-Identifier: MIT OR Apache-2.0
//
// Compiles the policy peers the gas benchmark compares against, at benchmark time, from the
// sources beside the repository (<repo>/../shared/anchors, LGPL-3.0: never copied into this
// repository, never shipped): Safe's AllowanceModule with solc-js 0.7.6 (upstream settings:
// optimizer off).
//
//   node scripts/compile-peers.mjs OUT_DIR    # writes OUT_DIR/<Contract>.json = {abi, bytecode}

import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ANCHORS = path.resolve(ROOT, '..', 'shared', 'anchors');
const require = createRequire(import.meta.url);

function solc(pkg) {
  const log = console.log;
  console.log = (...a) => process.stderr.write(a.join(' ') + '\n');
  try {
    return require(path.join(ROOT, '.tools', 'node_modules', pkg));
  } finally {
    console.log = log;
  }
}

function compile(compiler, dir, files, settings, wanted, out) {
  const sources = {};
  for (const f of files) sources[f] = { content: fs.readFileSync(path.join(dir, f), 'utf8') };
  const input = {
    language: 'Solidity',
    sources,
    settings: { ...settings, outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object'] } } },
  };
  const findImports = (p) => {
    const abs = path.resolve(dir, p);
    return fs.existsSync(abs) ? { contents: fs.readFileSync(abs, 'utf8') } : { error: `not found: ${p}` };
  };
  const result = JSON.parse(compiler.compile(JSON.stringify(input), { import: findImports }));
  const errors = (result.errors ?? []).filter((e) => e.severity === 'error');
  if (errors.length) throw new Error(errors.map((e) => e.formattedMessage).join('\n'));
  for (const [file, name] of wanted) {
    const c = result.contracts[file][name];
    fs.writeFileSync(path.join(out, `${name}.json`), JSON.stringify({ abi: c.abi, bytecode: '0x' + c.evm.bytecode.object }));
  }
}

const out = process.argv[2];
if (!out) {
  console.error('usage: node scripts/compile-peers.mjs OUT_DIR');
  process.exit(2);
}
fs.mkdirSync(out, { recursive: true });
const allowance = path.join(ANCHORS, 'safe-allowance-module', 'modules', 'allowances', 'contracts');
compile(
  solc('solc-0.7.6'),
  allowance,
  ['AllowanceModule.sol'],
  { optimizer: { enabled: false } },
  [['AllowanceModule.sol', 'AllowanceModule']],
  out,
);
console.error(`compile-peers: wrote AllowanceModule to ${out}`);
