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

say "installing the toolchain (npm packages into .tools/; softhsm2, opensc, faketime, postgresql, systemd and prometheus with apt-get)"
bash scripts/install.sh

if [ -f scripts/compile-contracts.mjs ]; then
  say "checking that chain/artifacts match chain/contracts (solc-js)"
  node scripts/compile-contracts.mjs --check
fi

if [ -f scripts/forge-test.sh ]; then
  say "running the Solidity tests (forge, with solc-js as its compiler)"
  bash scripts/forge-test.sh
fi

say "checking dependencies with cargo-deny: licences, duplicate versions, sources"
.tools/bin/cargo-deny --log-level error check licenses bans sources
advisory_db="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
if [ -d "$advisory_db" ] && [ -n "$(ls -A "$advisory_db" 2>/dev/null)" ]; then
  say "checking advisories against the local RustSec database copy in $advisory_db (offline)"
  .tools/bin/cargo-deny --log-level error check --disable-fetch advisories
else
  say "advisories not checked: no local RustSec database in $advisory_db (only package registries are reachable here)"
fi

say "checking the systemd units (systemd-analyze verify) and the Prometheus rules (promtool check/test rules)"
bash scripts/check-ops.sh

say "checking formatting (cargo fmt) and lints (cargo clippy -D warnings)"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

say "running the Rust tests (cargo test --workspace)"
cargo test --workspace --locked -- --test-threads="${TREASURY_TEST_THREADS:-2}"

# The demo's calendar-driven policies (daily, weekly, monthly) must not depend on the day the suite
# runs: its scenario again with the clock at the end of a 31-day month and of February (both
# crossing midnight into a new month), a Monday and a Sunday.
say "running the demo's scenario test at fixed dates (faketime)"
for date in "2027-01-31 23:58:00" "2027-02-28 23:58:00" "2027-03-01 12:00:00" "2027-03-07 12:00:00"; do
  say "  clock at $date UTC"
  TREASURY_FAKE_DATE="$date" CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$root/scripts/faketime-runner" \
    cargo test --workspace --locked --test dev -- the_scenario_runs_to_the_end
done
