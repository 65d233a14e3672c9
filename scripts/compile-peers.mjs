#!/usr/bin/env node
// SPDX-License-Identifier: MIT OR Apache-2.0
//
// Compiles the policy peers the gas benchmark compares against, at benchmark time, from the
// sources beside the repository (<repo>/../shared/anchors, LGPL-3.0: never copied into this
// repository, never shipped): Safe's AllowanceModule with solc-js 0.7.6 (upstream settings:
// optimizer off), Zodiac Roles v2 and its MultiSend unwrapper with solc-js 0.8.21 (upstream
// settings: shanghai, optimizer 100 runs; imports from npm @gnosis-guild/zodiac-core 3.0.1 and
// @openzeppelin/contracts[-upgradeable] 4.9.3 in .tools).
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
    settings: {
      ...settings,
      outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.bytecode.linkReferences'] } },
    },
  };
  const findImports = (p) => {
    const abs = p.startsWith('@') ? path.join(ROOT, '.tools', 'node_modules', p) : path.resolve(dir, p);
    return fs.existsSync(abs) ? { contents: fs.readFileSync(abs, 'utf8') } : { error: `not found: ${p}` };
  };
  const result = JSON.parse(compiler.compile(JSON.stringify(input), { import: findImports }));
  const errors = (result.errors ?? []).filter((e) => e.severity === 'error');
  if (errors.length) throw new Error(errors.map((e) => e.formattedMessage).join('\n'));
  for (const [file, name] of wanted) {
    const c = result.contracts[file][name];
    // external libraries to deploy first: the placeholder in the bytecode and the library's code
    const links = [];
    for (const [libFile, libs] of Object.entries(c.evm.bytecode.linkReferences ?? {})) {
      for (const [libName, refs] of Object.entries(libs)) {
        const placeholder = c.evm.bytecode.object.substr(2 * refs[0].start, 40);
        const lib = result.contracts[libFile][libName].evm.bytecode.object;
        if (lib.includes('__$')) throw new Error(`${libName} needs linking itself`);
        links.push({ name: libName, placeholder, bytecode: '0x' + lib });
      }
    }
    const artifact = { abi: c.abi, bytecode: '0x' + c.evm.bytecode.object, links };
    fs.writeFileSync(path.join(out, `${name}.json`), JSON.stringify(artifact));
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
const roles = path.join(ANCHORS, 'zodiac-roles-v2', 'packages', 'evm', 'contracts');
compile(
  solc('solc-0.8.21'),
  roles,
  ['Roles.sol', 'periphery/MultiSendUnwrapper.sol'],
  { optimizer: { enabled: true, runs: 100 }, evmVersion: 'shanghai' },
  [
    ['Roles.sol', 'Roles'],
    ['periphery/MultiSendUnwrapper.sol', 'MultiSendUnwrapper'],
  ],
  out,
);
// Roles stores its scopes through the ERC-2470 singleton factory (CREATE2 deployer at
// 0xce0042B868300000d44A59004Da54A005ffdcf9f on public chains); anvil lacks it, so the bench sets
// this runtime code at that address. The factory is the one-function contract of ERC-2470.
const factorySource = `// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.21;
contract SingletonFactory {
    function deploy(bytes memory initCode, bytes32 salt) public returns (address payable created) {
        assembly { created := create2(0, add(initCode, 0x20), mload(initCode), salt) }
    }
}`;
const factoryOut = JSON.parse(
  solc('solc-0.8.21').compile(
    JSON.stringify({
      language: 'Solidity',
      sources: { 'SingletonFactory.sol': { content: factorySource } },
      settings: { evmVersion: 'shanghai', outputSelection: { '*': { '*': ['evm.deployedBytecode.object'] } } },
    }),
  ),
);
const runtime = factoryOut.contracts['SingletonFactory.sol'].SingletonFactory.evm.deployedBytecode.object;
fs.writeFileSync(path.join(out, 'SingletonFactory.json'), JSON.stringify({ runtime: '0x' + runtime }));
console.error(`compile-peers: wrote AllowanceModule, Roles, MultiSendUnwrapper, SingletonFactory to ${out}`);
