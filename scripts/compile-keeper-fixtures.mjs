#!/usr/bin/env node
// SPDX-License-Identifier: MIT OR Apache-2.0
//
// Compiles the keeper jobs' test fixtures (issue 18) with solc-js into .tools/chainlink/artifacts:
//   - tests/devnet/contracts/keeper/*.sol (ours, written against Chainlink's interfaces), and
//   - Chainlink's own examples UpkeepCounter and UpkeepReverter from npm @chainlink/contracts,
//     unpacked by scripts/install.sh into .tools/chainlink/package (the package's install scripts
//     fail, so it is fetched with `npm pack`, never `npm install`).
// Nothing of Chainlink's is committed: its package is BUSL-1.1 overall (the files used here are
// MIT), so, like the Safe and Uniswap artifacts, it is installed, not vendored.
//
//   node scripts/compile-keeper-fixtures.mjs
//
// UpkeepCounter pins `pragma solidity 0.8.16;`; the project's solc is 0.8.35, so that one pragma
// is read as `^0.8.16` (the source is otherwise compiled as published).

import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const TOOLS = process.env.TREASURY_TOOLS_DIR
  ? path.resolve(process.env.TREASURY_TOOLS_DIR, '..')
  : path.join(ROOT, '.tools');
const CHAINLINK = path.join(TOOLS, 'chainlink', 'package');
const OUT = path.join(TOOLS, 'chainlink', 'artifacts');
const FIXTURES = path.join(ROOT, 'tests', 'devnet', 'contracts', 'keeper');
const PREFIX = '@chainlink/contracts/';
const EXAMPLES = ['src/v0.8/automation/testhelpers/UpkeepCounter.sol', 'src/v0.8/automation/testhelpers/UpkeepReverter.sol'];
const require = createRequire(import.meta.url);

const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: 'cancun',
  metadata: { bytecodeHash: 'none' },
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
};

function chainlinkSource(rel) {
  const abs = path.resolve(CHAINLINK, rel);
  if (!abs.startsWith(CHAINLINK + path.sep) || !fs.existsSync(abs)) return null;
  return fs.readFileSync(abs, 'utf8').replace(/pragma solidity 0\.8\.16;/, 'pragma solidity ^0.8.16;');
}

function main() {
  if (!fs.existsSync(CHAINLINK)) {
    process.stderr.write(`compile-keeper-fixtures: ${CHAINLINK} is missing (run scripts/install.sh)\n`);
    process.exit(1);
  }
  const sources = {};
  for (const f of fs.readdirSync(FIXTURES).filter((f) => f.endsWith('.sol')).sort()) {
    sources[`keeper/${f}`] = { content: fs.readFileSync(path.join(FIXTURES, f), 'utf8') };
  }
  for (const rel of EXAMPLES) sources[PREFIX + rel] = { content: chainlinkSource(rel) };
  const findImports = (p) => {
    if (p.startsWith(PREFIX)) {
      const text = chainlinkSource(p.slice(PREFIX.length));
      return text === null ? { error: `not found: ${p}` } : { contents: text };
    }
    return { error: `not found: ${p}` };
  };
  const log = console.log;
  console.log = (...a) => process.stderr.write(a.join(' ') + '\n');
  const solc = require(path.join(TOOLS, 'node_modules', 'solc'));
  console.log = log;
  const input = { language: 'Solidity', sources, settings: SETTINGS };
  const out = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  let failed = false;
  for (const e of out.errors ?? []) {
    if (e.severity === 'error') failed = true;
    if (e.severity === 'error') process.stderr.write(`${e.formattedMessage ?? e.message}\n`);
  }
  if (failed) {
    process.stderr.write('compile-keeper-fixtures: solc reported errors\n');
    process.exit(1);
  }
  fs.mkdirSync(OUT, { recursive: true });
  let n = 0;
  for (const file of Object.keys(out.contracts ?? {}).sort()) {
    for (const [name, c] of Object.entries(out.contracts[file])) {
      const bytecode = c.evm?.bytecode?.object ?? '';
      if (!c.abi?.length || bytecode.length === 0) continue;
      const artifact = { contractName: name, source: file, abi: c.abi, bytecode: '0x' + bytecode };
      fs.writeFileSync(path.join(OUT, `${name}.json`), JSON.stringify(artifact, null, 2) + '\n');
      n += 1;
    }
  }
  process.stdout.write(`compile-keeper-fixtures: wrote ${n} artifacts to ${OUT}\n`);
}

main();
