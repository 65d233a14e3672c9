#!/usr/bin/env bash
# Checks what operators install beside the binary: the systemd units in config/systemd
# (`systemd-analyze verify`, any warning fails) and the Prometheus alert rules in
# config/prometheus (`promtool check rules`, then `promtool test rules` with their unit tests).
# Needs systemd-analyze and promtool (Debian packages systemd and prometheus; scripts/install.sh
# installs them). TREASURY_EXE names the binary the units' ExecStart is pointed at for the check
# (default: the debug build, else /bin/true: verify only needs an executable).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

command -v systemd-analyze >/dev/null 2>&1 || die "systemd-analyze not found: run scripts/install.sh"
command -v promtool >/dev/null 2>&1 || die "promtool not found: run scripts/install.sh (Debian package prometheus)"

exe="${TREASURY_EXE:-${CARGO_TARGET_DIR:-$root/target}/debug/treasury}"
[ -x "$exe" ] || exe=/bin/true
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

say "systemd-analyze verify config/systemd/*.service (ExecStart → $exe)"
for unit in config/systemd/*.service; do
  sed "s#/usr/local/bin/treasury#$exe#g" "$unit" > "$tmp/$(basename "$unit")"
done
out="$(systemd-analyze verify "$tmp"/*.service 2>&1)" || die "systemd-analyze verify failed: $out"
# Unknown keys and similar mistakes are only warnings for systemd-analyze: fail on any output.
[ -z "$out" ] || die "systemd-analyze verify warned: $out"

say "promtool check rules config/prometheus/alerts.yml"
promtool check rules config/prometheus/alerts.yml
say "promtool test rules config/prometheus/alerts.test.yml"
promtool test rules config/prometheus/alerts.test.yml

say "the Grafana dashboard is valid JSON with a query in every panel"
python3 - "$root/config/grafana/treasury.json" <<'PY'
import json, sys
dash = json.load(open(sys.argv[1]))
panels = dash["panels"]
missing = [p["title"] for p in panels if p.get("type") != "row" and not p.get("targets")]
assert panels and not missing, f"panels without a query: {missing}"
print(f"{len(panels)} panels ok")
PY
