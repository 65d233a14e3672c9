#!/usr/bin/env node
// SPDX-License-Identifier: MIT OR Apache-2.0
//
// Compiles every chain/contracts/*.sol with solc-js (.tools/node_modules/solc) and writes
// chain/artifacts/<ContractName>.json = {"contractName","abi","bytecode","deployedBytecode"}.
//
//   node scripts/compile-contracts.mjs          # (re)write the artifacts
//   node scripts/compile-contracts.mjs --check  # recompile in memory, exit 1 if any artifact differs
//
// Settings are fixed here and mirrored in chain/foundry.toml: optimizer on (200 runs), evmVersion
// cancun, metadata.bytecodeHash "none" (bytecode independent of paths and comments' metadata).
// Artifacts are written for every contract with a non-empty ABI (deployable contracts and
// interfaces; libraries whose functions are all internal are skipped).

import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CONTRACTS = path.join(ROOT, 'chain', 'contracts');
const ARTIFACTS = path.join(ROOT, 'chain', 'artifacts');
const require = createRequire(import.meta.url);

export const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: 'cancun',
  metadata: { bytecodeHash: 'none' },
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
};

function loadSolc() {
  const log = console.log;
  console.log = (...a) => process.stderr.write(a.join(' ') + '\n'); // solc-js SMT notice
  try {
    return require(path.join(ROOT, '.tools', 'node_modules', 'solc'));
  } finally {
    console.log = log;
  }
}

function compile() {
  const files = fs.readdirSync(CONTRACTS).filter((f) => f.endsWith('.sol')).sort();
  if (files.length === 0) throw new Error(`no .sol files in ${CONTRACTS}`);
  const sources = {};
  for (const f of files) sources[f] = { content: fs.readFileSync(path.join(CONTRACTS, f), 'utf8') };
  const input = { language: 'Solidity', sources, settings: SETTINGS };
  const findImports = (p) => {
    const abs = path.resolve(CONTRACTS, p);
    if (!abs.startsWith(CONTRACTS + path.sep) || !fs.existsSync(abs)) return { error: `not found: ${p}` };
    return { contents: fs.readFileSync(abs, 'utf8') };
  };
  const solc = loadSolc();
  const out = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  let failed = false;
  for (const e of out.errors ?? []) {
    const loc = e.sourceLocation
      ? `chain/contracts/${e.sourceLocation.file}:${lineOf(sources, e.sourceLocation)}: `
      : '';
    const msg = `${loc}${e.severity}: ${e.type}: ${e.message}`;
    if (e.severity === 'error') {
      failed = true;
      process.stderr.write(`${msg}\n${e.formattedMessage ?? ''}\n`);
    } else {
      process.stderr.write(`${msg}\n`);
    }
  }
  if (failed) throw new Error('solc reported errors');

  const artifacts = new Map();
  for (const file of Object.keys(out.contracts ?? {}).sort()) {
    for (const name of Object.keys(out.contracts[file]).sort()) {
      const c = out.contracts[file][name];
      if (!c.abi || c.abi.length === 0) continue;
      if (artifacts.has(name)) throw new Error(`two contracts named ${name} (second in ${file})`);
      const hex = (o) => '0x' + (o ?? '');
      const artifact = {
        contractName: name,
        abi: c.abi,
        bytecode: hex(c.evm?.bytecode?.object),
        deployedBytecode: hex(c.evm?.deployedBytecode?.object),
      };
      if (/__\$[0-9a-f]{34}\$__/.test(artifact.bytecode)) {
        throw new Error(`${name} needs library linking; make library functions internal`);
      }
      artifacts.set(name, JSON.stringify(artifact, null, 2) + '\n');
    }
  }
  return artifacts;
}

function lineOf(sources, loc) {
  const text = sources[loc.file]?.content;
  if (text === undefined || loc.start < 0) return '?';
  // sourceLocation offsets are in bytes (UTF-8), not UTF-16 code units
  return Buffer.from(text, 'utf8').subarray(0, loc.start).toString('utf8').split('\n').length;
}

function main() {
  const check = process.argv.includes('--check');
  let artifacts;
  try {
    artifacts = compile();
  } catch (e) {
    process.stderr.write(`compile-contracts: ${e.message}\n`);
    process.exit(1);
  }
  const existing = fs.existsSync(ARTIFACTS)
    ? fs.readdirSync(ARTIFACTS).filter((f) => f.endsWith('.json'))
    : [];
  if (check) {
    const problems = [];
    for (const [name, text] of artifacts) {
      const p = path.join(ARTIFACTS, `${name}.json`);
      if (!fs.existsSync(p)) problems.push(`missing: chain/artifacts/${name}.json`);
      else if (fs.readFileSync(p, 'utf8') !== text) problems.push(`differs: chain/artifacts/${name}.json`);
    }
    for (const f of existing) {
      if (!artifacts.has(f.slice(0, -5))) problems.push(`stale (no source contract): chain/artifacts/${f}`);
    }
    if (problems.length) {
      process.stderr.write(problems.join('\n') + '\nrun: node scripts/compile-contracts.mjs\n');
      process.exit(1);
    }
    process.stdout.write(`compile-contracts: ${artifacts.size} artifacts up to date\n`);
    return;
  }
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  for (const f of existing) {
    if (!artifacts.has(f.slice(0, -5))) fs.unlinkSync(path.join(ARTIFACTS, f));
  }
  for (const [name, text] of artifacts) fs.writeFileSync(path.join(ARTIFACTS, `${name}.json`), text);
  process.stdout.write(`compile-contracts: wrote ${artifacts.size} artifacts to chain/artifacts\n`);
}

main();
