#!/usr/bin/env bash
# Browser tests of the web UI: real headless Chromium (Debian's) driven by
# playwright-core, against the real daemon `car-runtime run --sim`.
# Exit 0 = passed, 77 = skipped (reason printed), anything else = failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
ROOT=$PWD

skip() { echo "SKIP browser: $*"; exit 77; }

if ! grep -rqs "impl CarApi for\|impl web_ui::CarApi for" car-runtime/src; then
  skip "car-runtime does not implement web_ui::CarApi yet; nothing real to test against"
fi
ensure_apt chromium || skip "Debian package chromium could not be installed (apt unavailable?)"
[ -x /usr/bin/chromium ] || skip "/usr/bin/chromium missing after install"
command -v node >/dev/null && command -v npm >/dev/null || skip "node/npm not installed"
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  (cd tests/browser && npm install --no-audit --no-fund --loglevel=error) >&2 \
    || skip "npm could not install playwright-core"
fi

ensure_cargo || exit 1
build_workspace_bins || { echo "car-runtime failed to build" >&2; exit 1; }
BIN="$CARGO_TARGET_DIR/debug/car-runtime"

TMP=$(mktemp -d /tmp/car-browser.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# The stock board's lights on a fake sysfs tree (the wheels stay simulated):
# the tail-light test reads the duty cycles the daemon writes for the
# colour picked on the Settings page.
SYS=$TMP/sys
mkdir -p "$SYS/devices/pci0000:00/0000:00:17.0" "$SYS/class/pwm/pwmchip0" "$SYS/class/gpio" "$SYS/class/net/wlan0"
ln -s ../../../devices/pci0000:00/0000:00:17.0 "$SYS/class/pwm/pwmchip0/device"
for c in 0 1 2 3 4; do
  mkdir -p "$SYS/class/pwm/pwmchip0/pwm$c"
  for f in period duty_cycle enable; do echo 0 >"$SYS/class/pwm/pwmchip0/pwm$c/$f"; done
done
for n in 448 447 437 446 445 443 450 457 458; do
  mkdir -p "$SYS/class/gpio/gpio$n"; echo in >"$SYS/class/gpio/gpio$n/direction"; echo 0 >"$SYS/class/gpio/gpio$n/value"
done
echo up >"$SYS/class/net/wlan0/operstate"
cat > "$TMP/config.toml" <<TOML
[actuator]
backend = "sim"
calibration = "$TMP/calibration.json"

[actuator.sysfs]
root = "$SYS"

[lights]
backend = "deepracer"
stock_led_values = "$TMP/no-stock-led-values.json"

[web]
address = "127.0.0.1:$PORT"
tls = false
state_dir = "$TMP/state"
models_dir = "$TMP/models"
TOML

"$BIN" run --sim --config "$TMP/config.toml" > "$TMP/daemon.log" 2>&1 &
DAEMON=$!
cleanup() {
  kill -TERM "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

for _ in $(seq 1 150); do
  [ -s "$TMP/state/initial-password" ] && (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  kill -0 "$DAEMON" 2>/dev/null || { echo "daemon exited:" >&2; cat "$TMP/daemon.log" >&2; exit 1; }
  sleep 0.2
done
[ -s "$TMP/state/initial-password" ] || { echo "daemon did not start its web UI:" >&2; cat "$TMP/daemon.log" >&2; exit 1; }

export BASE_URL="http://127.0.0.1:$PORT"
export CAR_PASSWORD; CAR_PASSWORD=$(tr -d '\n' < "$TMP/state/initial-password")
export GOOD_MODEL="$ROOT/models/default"
export CAL_FILE="$TMP/calibration.json"
export TAIL_DIR="$SYS/class/pwm/pwmchip0"
export SHOTS="$ROOT/tests/browser/screenshots"
(cd tests/browser && node --test --test-concurrency=1 ui.test.mjs)
rc=$?
if [ $rc -ne 0 ]; then
  echo "--- daemon log (tail)" >&2; tail -40 "$TMP/daemon.log" >&2
fi
exit $rc
