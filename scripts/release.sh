#!/usr/bin/env bash
# Builds the release `treasury` binary without the paths of the machine that built it, and checks it.
#
# Cargo's `trim-paths` is not stable in the pinned toolchain, so the same is done with rustc's
# --remap-path-prefix: the checkout becomes `treasury/`, cargo's home `cargo/`, the toolchain's
# sources `rust/`. The check then looks for the checkout, $CARGO_HOME and $HOME in the binary
# (`--check-only`: check an existing build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
checkout="$(pwd)"
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
sysroot="$(rustc --print sysroot)"
export RUSTFLAGS="${RUSTFLAGS:-} --remap-path-prefix=$checkout=treasury --remap-path-prefix=$cargo_home=cargo --remap-path-prefix=$sysroot=rust"
if [ "${1:-}" != "--check-only" ]; then
  echo "==> building the release binary (paths remapped)"
  cargo build --release --locked -p treasury
fi
binary="${CARGO_TARGET_DIR:-target}/release/treasury"
echo "==> checking $binary for build paths"
text="$(mktemp)"
trap 'rm -f "$text"' EXIT
strings "$binary" > "$text"
found=0
for path in "$checkout" "$cargo_home" "$HOME"; do
  # An absolute path starts a string or follows a separator (so `src/root/` is not `$HOME=/root`).
  if grep -qE "(^|[[:space:]\"'=:(])${path}/" "$text"; then
    echo "error: $binary contains $path" >&2
    grep -E "(^|[[:space:]\"'=:(])${path}/" "$text" | head -5 >&2
    found=1
  fi
done
if [ "$found" = 0 ]; then
  echo "ok: no build path ($checkout, $cargo_home, $HOME) in $binary"
fi
exit "$found"
