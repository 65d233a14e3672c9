#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
#
# Runs the Solidity tests (chain/test) with the pinned forge and solc-js through scripts/solc-forge,
# offline, then prints a gas report with each top-level call isolated as its own transaction
# (so exec gas includes intrinsic and cold-access costs). Extra arguments go to `forge test`.
# Needs the FROST vectors at <repo>/../shared/vectors (CI clones the repo beside shared/).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FORGE="$ROOT/.tools/node_modules/@foundry-rs/forge-linux-amd64/bin/forge"
SOLC="$ROOT/scripts/solc-forge"
VECTORS="$ROOT/../shared/vectors/frost-secp256k1-sha256.jsonl"

if [[ ! -x "$FORGE" ]]; then
  echo "forge-test: $FORGE not found; run: npm ci --prefix .tools" >&2
  exit 1
fi
if [[ ! -f "$VECTORS" ]]; then
  echo "forge-test: FROST vectors missing: expected $VECTORS (a shared/ folder beside the repo)" >&2
  exit 1
fi

cd "$ROOT"
"$FORGE" test --root chain --offline --use "$SOLC" "$@"
echo
echo "== gas report (each call isolated as a transaction) =="
"$FORGE" test --root chain --offline --use "$SOLC" --isolate --gas-report \
  --match-contract 'GasTest|FrostVerifierTest' -vv "$@" | grep -v '^\s*$'
