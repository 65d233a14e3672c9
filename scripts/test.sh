#!/usr/bin/env bash
# Runs treasury's whole test suite: installs what is missing, checks the committed contract
# artifacts, runs the Solidity (forge) tests, formatting and lints, then every Rust test
# (unit tests and end-to-end tests against anvil, SoftHSM2 and signer processes).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
say() { printf '\n==> %s\n' "$*" >&2; }

# A build cache outside the clone keeps repeated runs fast; a fresh machine builds from scratch.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/treasury/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# One full build per run: incremental data would only cost time and gigabytes of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

say "installing the toolchain (npm packages into .tools/, softhsm2 and opensc with apt-get)"
bash scripts/install.sh

if [ -f scripts/compile-contracts.mjs ]; then
  say "checking that chain/artifacts match chain/contracts (solc-js)"
  node scripts/compile-contracts.mjs --check
fi

if [ -f scripts/forge-test.sh ]; then
  say "running the Solidity tests (forge, with solc-js as its compiler)"
  bash scripts/forge-test.sh
fi

say "checking formatting (cargo fmt) and lints (cargo clippy -D warnings)"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

say "running the Rust tests (cargo test --workspace)"
cargo test --workspace --locked -- --test-threads="${TREASURY_TEST_THREADS:-2}"
