#!/usr/bin/env bash
# Real-device test: boots Debian's stock kernel under qemu (TCG) with the
# vivid camera driver and i2c-stub as a PCA9685 register file, runs the real
# car-runtime (v4l2 source + pca9685 backend) inside, and prints one summary
# line. Exit 0 pass, 1 fail, 77 cannot run here (the reason is printed).
#
# Env: VM_PROFILE=release|debug (default release), VM_SECS (default 5),
# VM_MAX_SPEED (default 50), VM_MODE=daemon|probe (probe: capture only),
# VM_KEEP=1 keeps the work dir.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
export PATH="$HOME/.cargo/bin:$PATH"

PROFILE=${VM_PROFILE:-release}
SECS=${VM_SECS:-5}
MAX_SPEED=${VM_MAX_SPEED:-50}
MODE=${VM_MODE:-daemon}
skip() { echo "vm-test: SKIPPED: $*"; exit 77; }
die() { echo "vm-test: FAILED: $*"; exit 1; }

command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 missing (apt package qemu-system-x86)"
[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' ||
  { [ -x /bin/busybox ] || skip "static busybox missing (apt package busybox-static)"; }
command -v cpio >/dev/null || skip "cpio missing"
[ "$(uname -m)" = x86_64 ] || skip "the VM test boots an x86_64 kernel; this is $(uname -m)"

# The newest installed kernel that has vivid.
KVER=""
for d in $(ls -d /lib/modules/* 2>/dev/null | sort -V); do
  v=$(basename "$d")
  [ -f "/boot/vmlinuz-$v" ] || continue
  modinfo -k "$v" -n vivid >/dev/null 2>&1 || continue
  KVER=$v
done
[ -n "$KVER" ] || skip "no /boot/vmlinuz-* with the vivid module (apt package linux-image-amd64)"
[ -r "/boot/vmlinuz-$KVER" ] || skip "/boot/vmlinuz-$KVER is not readable"
MODDIR=/lib/modules/$KVER

# Build the real binaries: static (glibc static-pie, crt-static) by default,
# so they run in the bare initramfs as they would on any board, whatever its
# libraries. Their own target dir: RUSTFLAGS differ from the normal build.
# VM_LINK=dynamic uses the normal build and copies its shared libraries in.
LINK=${VM_LINK:-static}
flag=(); [ "$PROFILE" = release ] && flag=(--release)
if [ "$LINK" = static ]; then
  export CARGO_TARGET_DIR=${VM_STATIC_TARGET_DIR:-$CARGO_TARGET_DIR-static}
  export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static"
  flag+=(--target x86_64-unknown-linux-gnu)
  outbase=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu
else
  outbase=$CARGO_TARGET_DIR
fi
t_build=$SECONDS
# VM_NO_BUILD=1: use what the target dir already holds.
if [ "${VM_NO_BUILD:-0}" != 1 ]; then
  cargo build "${flag[@]}" --locked -p car-runtime --bin car-runtime --example v4l2_probe >&2 ||
    die "cargo build of car-runtime failed"
fi
t_build=$((SECONDS - t_build))
[ "$PROFILE" = release ] && outdir=release || outdir=debug
BIN=$outbase/$outdir/car-runtime
PROBE=$outbase/$outdir/examples/v4l2_probe
if [ "$LINK" = static ]; then
  for b in "$BIN" "$PROBE"; do
    [ -x "$b" ] || continue
    ! readelf -d "$b" 2>/dev/null | grep -q '(NEEDED)' || die "$b needs shared libraries; a static build was asked for"
  done
fi
[ -x "$PROBE" ] || die "$PROBE was not built"
[ "$MODE" = probe ] || [ -x "$BIN" ] || die "$BIN was not built"

WORK=$(mktemp -d /var/tmp/car-vm.XXXXXX)
[ "${VM_KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/root
mkdir -p "$ROOT"/{bin,etc,proc,sys,dev,tmp,model,lib/modules}
cp /bin/busybox "$ROOT/bin/busybox"
cp scripts/vm/init.sh "$ROOT/init"; chmod 755 "$ROOT/init"

# Binaries, stripped (the release profile keeps line tables), plus every
# shared library they load and the dynamic loader, at their own paths.
for b in "$BIN" "$PROBE"; do
  [ -x "$b" ] || continue
  objcopy --strip-debug "$b" "$ROOT/bin/$(basename "$b")"
  for lib in $(ldd "$b" | grep -oE '/[^ ]+\.so[^ ]*' | sort -u); do
    mkdir -p "$ROOT$(dirname "$lib")"
    cp -L "$lib" "$ROOT$lib"
  done
done

# Modules in dependency order (modules.dep lists each one's dependencies).
declare -A seen=()
order=()
resolve() {
  local rel=$1
  [ -n "${seen[$rel]:-}" ] && return 0
  seen[$rel]=1
  local deps
  deps=$(grep -E "^${rel//./\\.}:" "$MODDIR/modules.dep" | cut -d: -f2)
  for d in $deps; do resolve "$d"; done
  order+=("$rel")
}
modrel() { modinfo -k "$KVER" -n "$1" | sed "s#^$MODDIR/##"; }
params_vivid="n_devs=1 node_types=0x1 num_inputs=1 input_types=0x0"
# 0x40: the PCA9685; 0x3f: the stock board's battery gauge.
params_i2c_stub="chip_addr=0x3f,0x40"
for m in vivid i2c-stub i2c-dev; do resolve "$(modrel "$m")"; done
: > "$ROOT/etc/modules.load"
for rel in "${order[@]}"; do
  src=$MODDIR/$rel; dst=${rel%.xz}; dst=${dst%.zst}; dst=${dst%.gz}
  mkdir -p "$ROOT/lib/modules/$(dirname "$dst")"
  case $rel in
    *.xz) xz -dc "$src" > "$ROOT/lib/modules/$dst";;
    *.zst) zstd -qdc "$src" > "$ROOT/lib/modules/$dst";;
    *.gz) gzip -dc "$src" > "$ROOT/lib/modules/$dst";;
    *) cp "$src" "$ROOT/lib/modules/$dst";;
  esac
  args=""
  case $(basename "$dst") in
    vivid.ko) args=$params_vivid;;
    i2c-stub.ko) args=$params_i2c_stub;;
  esac
  echo "$dst $args" >> "$ROOT/etc/modules.load"
done

# A model with exactly predictable commands (tests/fixtures/centre-seeker:
# seven angles, one speed) and a config selecting the camera and the PCA9685.
fixture=tests/fixtures/centre-seeker
[ -f $fixture/model.onnx ] || die "$fixture/model.onnx missing"
cp $fixture/model.onnx $fixture/model_metadata.json "$ROOT/model/"
cat > "$ROOT/etc/car.toml" <<TOML
[source]
kind = "v4l2"
width = 640
height = 480
fps = 15

[actuator]
backend = "pca9685"
calibration = "/etc/car-runtime/calibration.json"

[actuator.pca9685]
bus = "/dev/i2c-0"
address = 0x40
frequency_hz = 50
throttle_channel = 0
steering_channel = 1

[web]
state_dir = "/tmp/web"

# The gauge's register file is i2c-stub's chip 0x3f (init.sh sets its
# charge byte); the stock board's bus discovery needs its PCI device, which
# the VM has not, so the bus is named.
[battery]
backend = "deepracer"
bus = "/dev/i2c-0"
poll_seconds = 5
TOML
cat > "$ROOT/etc/vmtest.env" <<ENV
SECS=$SECS
MAX_SPEED=$MAX_SPEED
MODE=$MODE
UNPLUG_AT=2
THROTTLE_CH=0
STEERING_CH=1
ENV
# What the host expects: the calibration this config resolves to (none on
# disk in the VM either, so the stock defaults), from the binary itself.
CAL_JSON=$([ -x "$BIN" ] && "$BIN" calibration show --config "$ROOT/etc/car.toml" --json 2>/dev/null || true)

(cd "$ROOT" && find . | cpio -o -H newc --quiet) > "$WORK/initrd"

LOG=$WORK/console.log
t_vm=$(date +%s%N)
timeout 150 qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 1024M \
  -nographic -no-reboot -nic none \
  -kernel "/boot/vmlinuz-$KVER" -initrd "$WORK/initrd" \
  -append "console=ttyS0 panic=-1 quiet loglevel=3 rdinit=/init" \
  < /dev/null > "$LOG" 2>&1 || true
t_vm=$(( ($(date +%s%N) - t_vm) / 1000000 ))
tr -d '\r' < "$LOG" > "$LOG.clean"
grep -q '^VMTEST done' "$LOG.clean" || { tail -n 40 "$LOG.clean"; die "the VM did not finish (log above)"; }

python3 scripts/vm/check.py "$LOG.clean" --mode "$MODE" --secs "$SECS" --max-speed "$MAX_SPEED" \
  --vm-ms "$t_vm" --build-seconds "$t_build" --kernel "$KVER" --calibration "$CAL_JSON" --link "$LINK"
