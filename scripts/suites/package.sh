#!/usr/bin/env bash
# Suite "package": scripts/package.sh builds both .debs; each one is listed
# and must hold the binary, unit, udev rules, conffile and maintainer scripts
# with the right modes, and its binary must need no GLIBC symbol newer than
# 2.31. The arm64 package's binary drives a simulated lap with its bundled
# model under qemu and must match the amd64 one. Then the amd64 package is installed, upgraded, removed and purged
# with dpkg inside a throw-away Debian 11 root (glibc 2.31, systemd 247:
# close to the stock DeepRacer's Ubuntu 20.04), checking the service user and
# groups, state dir, enablement, that the binary runs there, that the udev
# rules give the service user the PWM files, that upgrades keep config,
# calibration and models, and that removal leaves the PWM in neutral.
# Exit 0 pass, 77 skipped (reason printed), else fail.
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/package.sh
. scripts/lib.sh

fail=0
bad() { echo "FAIL: $*" >&2; fail=1; }
ok() { echo "ok: $*"; }

[ "$(id -u)" -eq 0 ] || { echo "skipped: needs root (apt installs, chroot, dpkg into a throw-away root)"; exit 77; }
ensure_cargo || exit 1
pkg_apt debootstrap binutils python3 qemu-user-static || { echo "skipped: cannot install debootstrap/binutils/qemu-user-static"; exit 77; }

t0=$SECONDS
if ! bash scripts/package.sh amd64 arm64; then
  echo "FAIL: scripts/package.sh" >&2
  exit 1
fi
echo "package.sh took $((SECONDS - t0))s"

version=$(pkg_version)
work=$(mktemp -d /var/tmp/car-package-suite.XXXXXX)
R=$work/root
# Never rm -rf through a mounted /proc or /sys.
unmount_root() {
  local m
  for m in sys/fs/cgroup sys proc; do
    mountpoint -q "$R/$m" 2>/dev/null && umount "$R/$m"
  done
  ! grep -q " $R/" /proc/mounts
}
cleanup() { if unmount_root; then rm -rf "$work"; else echo "warning: $R still has mounts; left in place" >&2; fi; }
trap cleanup EXIT

# check_deb ARCH MACHINE CONFIG
check_deb() {
  local arch=$1 machine=$2 config=$3 deb=dist/car-runtime_${version}_$1.deb
  echo "--- $deb"
  [ -f "$deb" ] || { bad "$deb missing"; return; }
  dpkg-deb -c "$deb" | tee "$work/$arch.list"
  local f mode
  while read -r mode f; do
    if ! awk -v m="$mode" -v f="./$f" '$1 == m && ($2 == "root/root" || $2 == "0/0") && $NF == f { found = 1 } END { exit !found }' "$work/$arch.list"; then
      bad "$arch: $f missing or not $mode root/root"
    fi
  done <<'EOF'
-rwxr-xr-x usr/bin/car-runtime
-rw-r--r-- lib/systemd/system/car-runtime.service
-rw-r--r-- lib/udev/rules.d/60-car-runtime.rules
-rw-r--r-- etc/car-runtime/config.toml
-rw-r--r-- usr/share/doc/car-runtime/INSTALL.md
-rw-r--r-- usr/share/car-runtime/models/README
EOF
  dpkg-deb -I "$deb"
  [ "$(dpkg-deb -f "$deb" Package)" = car-runtime ] || bad "$arch: Package is not car-runtime"
  [ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] || bad "$arch: Architecture is $(dpkg-deb -f "$deb" Architecture)"
  [ "$(dpkg-deb -f "$deb" Version)" = "$version" ] || bad "$arch: Version is $(dpkg-deb -f "$deb" Version), want $version"
  dpkg-deb -f "$deb" Depends | grep -q 'libc6 (>= 2.31)' || bad "$arch: Depends lacks libc6 (>= 2.31)"
  local ctrl=$work/$arch.ctrl data=$work/$arch.data
  mkdir -p "$ctrl" "$data"
  dpkg-deb -e "$deb" "$ctrl"; dpkg-deb -x "$deb" "$data"
  grep -qx /etc/car-runtime/config.toml "$ctrl/conffiles" || bad "$arch: /etc/car-runtime/config.toml is not a conffile"
  for f in postinst prerm postrm; do
    [ -x "$ctrl/$f" ] && cmp -s "$ctrl/$f" "debian/$f" || bad "$arch: $f missing, not executable or not debian/$f"
  done
  cmp -s "$data/lib/systemd/system/car-runtime.service" systemd/car-runtime.service || bad "$arch: unit differs from systemd/"
  cmp -s "$data/etc/car-runtime/config.toml" "$config" || bad "$arch: config.toml is not $config"
  local bin=$data/usr/bin/car-runtime
  readelf -h "$bin" | grep -q "Machine:.*$machine" || bad "$arch: binary is not $machine: $(readelf -h "$bin" | grep Machine)"
  if pkg_check_glibc "$bin"; then ok "$arch: GLIBC ceiling $(pkg_glibc_ceiling "$bin") <= $GLIBC_CEILING"; else bad "$arch: GLIBC ceiling"; fi
  echo "$arch: $(du -h "$deb" | cut -f1) package, $(du -h "$bin" | cut -f1) binary"
}

check_deb amd64 X86-64 systemd/config.toml
check_deb arm64 AArch64 systemd/config-arm64.toml
if out=$(qemu-aarch64-static -L / "$work/arm64.data/usr/bin/car-runtime" --help 2>&1); then
  ok "arm64 binary runs under qemu: $(echo "$out" | head -n1)"
else
  bad "arm64 binary under qemu: $out"
fi
# End to end on aarch64: the shipped binary drives the simulated car round a
# lap with the model shipped beside it, and agrees with the amd64 package's
# binary (same simulator; tract's float kernels differ per CPU, so the lap
# time may differ in the last digits). Emulated float SIMD is slow: ~1 min.
lap_json() {
  local arch=$1 runner=()
  [ "$arch" = arm64 ] && runner=(qemu-aarch64-static -L /)
  "${runner[@]}" "$work/$arch.data/usr/bin/car-runtime" run --sim --headless --laps 1 --max-speed 60 --json \
    --model "$work/$arch.data/usr/share/car-runtime/models/default" 2>"$work/$arch.lap.log"
}
t1=$SECONDS
if lap_amd64=$(lap_json amd64) && lap_arm64=$(lap_json arm64); then
  echo "amd64 lap: $lap_amd64"
  echo "arm64 lap (qemu, $((SECONDS - t1))s): $lap_arm64"
  if verdict=$(python3 - "$lap_amd64" "$lap_arm64" <<'EOF'
import json, sys
a, b = (json.loads(x) for x in sys.argv[1:3])
def lap(r):
    return r["laps_completed"] == 1 and r["offtrack_events"] == 0 and len(r["lap_times_s"]) == 1
if not (lap(a) and lap(b)):
    sys.exit(f"a clean lap each expected: amd64 {a}, arm64 {b}")
ta, tb = a["lap_times_s"][0], b["lap_times_s"][0]
if abs(ta - tb) > 0.02 * ta or abs(a["frames"] - b["frames"]) > 3:
    sys.exit(f"laps differ: amd64 {ta:.3f} s / {a['frames']} frames, arm64 {tb:.3f} s / {b['frames']} frames")
print(f"lap {tb:.3f} s in {b['frames']} frames (amd64 {ta:.3f} s in {a['frames']})")
EOF
  ); then
    ok "arm64 binary drives a simulated lap with its bundled model under qemu: $verdict"
  else
    bad "arm64 simulated lap: $verdict"
  fi
  grep -q "neutral written" "$work/arm64.lap.log" && ok "arm64: neutral written at the end of the run" \
    || bad "arm64: no 'neutral written' in the log: $(tail -n 3 "$work/arm64.lap.log")"
else
  bad "simulated lap: $(tail -n 5 "$work"/*.lap.log)"
fi

# ---------------------------------------------------------------- install test
# A Debian 11 root made once by debootstrap and kept as a tarball.
ROOT_TAR=/var/tmp/car-bullseye-root.tar
if [ ! -s "$ROOT_TAR" ]; then
  t1=$SECONDS
  b=$work/bootstrap
  for try in 1 2; do
    rm -rf "$b"
    debootstrap --variant=minbase --include=systemd,udev,init-system-helpers,passwd \
      bullseye "$b" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 && break
    tail -n 5 "$work/debootstrap.log" >&2
  done
  [ -x "$b/usr/bin/dpkg" ] || { echo "FAIL: debootstrap bullseye failed" >&2; exit 1; }
  tar -C "$b" -cf "$ROOT_TAR.tmp" . && mv "$ROOT_TAR.tmp" "$ROOT_TAR"
  rm -rf "$b"
  echo "debootstrap bullseye took $((SECONDS - t1))s (cached in $ROOT_TAR)"
fi
mkdir -p "$R"
tar -C "$R" -xf "$ROOT_TAR"
# setpriv and systemd-analyze need /proc; systemd-analyze also /sys and the cgroup tree.
mount -t proc proc "$R/proc" || { echo "FAIL: cannot mount /proc in the throw-away root" >&2; exit 1; }
ROOT_PATH=/usr/sbin:/usr/bin:/sbin:/bin
in_root() { chroot "$R" /usr/bin/env -i PATH=$ROOT_PATH LANG=C.UTF-8 "$@"; }
as_service() { in_root setpriv --reuid=car-runtime --regid=car-runtime --init-groups "$@"; }
echo "throw-away root: $(in_root sh -c '. /etc/os-release; echo $PRETTY_NAME'), $(in_root ldd --version | head -n1)"

deb=dist/car-runtime_${version}_amd64.deb
cp "$deb" "$R/tmp/car-runtime.deb"
if in_root dpkg -i /tmp/car-runtime.deb >"$work/install.log" 2>&1; then
  ok "dpkg -i in the throw-away root"
else
  bad "dpkg -i failed:"; cat "$work/install.log" >&2
fi
cat "$work/install.log"
grep -q "initial-password" "$work/install.log" && ok "postinst says where the web password is" || bad "postinst did not say where to read the password"

pw=$(in_root getent passwd car-runtime)
echo "user: $pw"
IFS=: read -r _ _ uid _ _ home shell <<<"$pw"
[ -n "$pw" ] && [ "$uid" -lt 1000 ] && [ "$home" = /var/lib/car-runtime ] && [ "$shell" = /usr/sbin/nologin ] \
  && ok "system user car-runtime (uid $uid, no login)" || bad "service user: $pw"
groups=$(in_root id -nG car-runtime)
for g in video i2c gpio; do
  echo " $groups " | grep -q " $g " || bad "car-runtime is not in group $g ($groups)"
done
ok "car-runtime groups: $groups"
st=$(in_root stat -c '%U:%G %a' /var/lib/car-runtime)
[ "$st" = "car-runtime:car-runtime 750" ] && ok "/var/lib/car-runtime $st" || bad "/var/lib/car-runtime is $st"
st=$(in_root stat -c '%U:%G %a' /usr/bin/car-runtime)
[ "$st" = "root:root 755" ] && ok "/usr/bin/car-runtime $st" || bad "/usr/bin/car-runtime is $st"
in_root dpkg-query -W -f='${Conffiles}\n' car-runtime | grep -q '/etc/car-runtime/config.toml' \
  && ok "config.toml registered as a conffile" || bad "config.toml is not a registered conffile"
link=$(readlink "$R/etc/systemd/system/multi-user.target.wants/car-runtime.service")
[ "$link" = /lib/systemd/system/car-runtime.service ] && ok "service enabled ($link)" || bad "service not enabled (link: '$link')"

# The binary runs on glibc 2.31, as the service user.
if out=$(as_service /usr/bin/car-runtime --help 2>&1); then ok "runs on Debian 11 as car-runtime: $(echo "$out" | head -n1)"; else bad "car-runtime --help in the root: $out"; fi
if mount -t sysfs sysfs "$R/sys" && mount --bind /sys/fs/cgroup "$R/sys/fs/cgroup"; then
  if out=$(in_root systemd-analyze verify /lib/systemd/system/car-runtime.service 2>&1) && [ -z "$out" ]; then
    ok "systemd-analyze verify inside the root ($(in_root systemd-analyze --version | head -n1))"
  else
    bad "systemd-analyze verify inside the root: $out"
  fi
else
  echo "note: cannot mount /sys in the throw-away root; unit verified by the systemd suite only"
fi
mountpoint -q "$R/sys/fs/cgroup" && umount "$R/sys/fs/cgroup"
mountpoint -q "$R/sys" && umount "$R/sys"

# PWM and GPIO permissions: a fake sysfs shaped like the DeepRacer board's,
# root-only as the kernel makes it; the installed udev rules must give the
# service user what neutral needs.
FS=/fake-sys
chip=$FS/devices/pci0000:00/0000:00:17.0/pwm/pwmchip0
mkdir -p "$R$chip" "$R$FS/class/pwm" "$R$FS/devices/platform/gpio/gpiochip0" "$R$FS/class/gpio"
ln -s ../../devices/pci0000:00/0000:00:17.0/pwm/pwmchip0 "$R$FS/class/pwm/pwmchip0"
ln -s ../../../0000:00:17.0 "$R$chip/device"
: >"$R$chip/export"; : >"$R$chip/unexport"; chmod 0200 "$R$chip/export" "$R$chip/unexport"
for c in 0 1; do
  mkdir -p "$R$chip/pwm$c"
  echo 0 >"$R$chip/pwm$c/period"; echo 0 >"$R$chip/pwm$c/duty_cycle"; echo 0 >"$R$chip/pwm$c/enable"; echo normal >"$R$chip/pwm$c/polarity"
done
g=$FS/devices/platform/gpio/gpio436
mkdir -p "$R$g"; ln -s ../../devices/platform/gpio/gpio436 "$R$FS/class/gpio/gpio436"
echo in >"$R$g/direction"; echo 1 >"$R$g/value"; echo 0 >"$R$g/active_low"; echo none >"$R$g/edge"
: >"$R$FS/class/gpio/export"; : >"$R$FS/class/gpio/unexport"; chmod 0200 "$R$FS/class/gpio/export" "$R$FS/class/gpio/unexport"
chown -R root:root "$R$FS"
# The racer's edit of the conffile: drive the fake tree. It must survive the upgrade below.
sed -i "s|^root = \"/sys\"|root = \"$FS\"|" "$R/etc/car-runtime/config.toml"
echo "# edited by the racer" >>"$R/etc/car-runtime/config.toml"

if as_service /usr/bin/car-runtime neutral --config /etc/car-runtime/config.toml >"$work/neutral0.log" 2>&1; then
  bad "the service user could write the root-only PWM files before the udev rules ran (test tree wrong?)"
else
  ok "before udev: the service user cannot drive the PWM ($(grep -o 'permission denied' "$work/neutral0.log" | head -n1))"
fi
if python3 systemd/tests/udev_sim.py run "$R/lib/udev/rules.d/60-car-runtime.rules" --sys "$FS" --chroot "$R" \
  "ACTION=add,SUBSYSTEM=pwm,KERNEL=pwmchip0,DEVPATH=/devices/pci0000:00/0000:00:17.0/pwm/pwmchip0" \
  "ACTION=change,SUBSYSTEM=pwm,KERNEL=pwmchip0,DEVPATH=/devices/pci0000:00/0000:00:17.0/pwm/pwmchip0,EXPORT=pwm0" \
  "ACTION=change,SUBSYSTEM=pwm,KERNEL=pwmchip0,DEVPATH=/devices/pci0000:00/0000:00:17.0/pwm/pwmchip0,EXPORT=pwm1" \
  "ACTION=add,SUBSYSTEM=gpio,KERNEL=gpiochip0,DEVPATH=/devices/platform/gpio/gpiochip0" \
  "ACTION=add,SUBSYSTEM=gpio,KERNEL=gpio436,DEVPATH=/devices/platform/gpio/gpio436"; then
  ok "udev rules ran for pwmchip add, channel export, gpiochip add, gpio export"
else
  bad "udev rules failed to run"
fi
echo "after udev:"; in_root ls -l "$chip" "$chip/pwm1" "$g" | sed 's/^/  /'
st=$(in_root stat -c '%G %A' "$chip/pwm1/duty_cycle")
[ "$st" = "gpio -rw-rw-r--" ] && ok "pwm1/duty_cycle is $st" || bad "pwm1/duty_cycle is $st, want gpio -rw-rw-r--"
st=$(in_root stat -c '%G %A' "$chip/export")
[ "$st" = "gpio --w--w----" ] && ok "pwmchip0/export is $st" || bad "pwmchip0/export is $st, want gpio --w--w----"
if as_service /usr/bin/car-runtime neutral --config /etc/car-runtime/config.toml >"$work/neutral1.log" 2>&1; then
  s=$(cat "$R$chip/pwm1/duty_cycle"); t=$(cat "$R$chip/pwm0/duty_cycle"); e=$(cat "$R$chip/pwm0/enable"); v=$(cat "$R$g/value")
  if [ "$s" = 1450000 ] && [ "$t" = 1446000 ] && [ "$e" = 1 ] && [ "$v" = 0 ]; then
    ok "after udev: the service user wrote neutral (steering $s, throttle $t ns, enabled, servo power on)"
  else
    bad "neutral as car-runtime wrote steering $s throttle $t enable $e gate $v"
  fi
else
  bad "neutral as car-runtime after the udev rules failed: $(cat "$work/neutral1.log")"
fi

# Upgrade to a newer version of the same package: config edit, calibration,
# uploaded models and the web password must survive.
in_root install -d -o car-runtime -g car-runtime /var/lib/car-runtime/models/mine /var/lib/car-runtime/web
# A racer's own calibration (project format), with mids off the stock ones
# so the removal check below can tell it was used.
cat >"$R/var/lib/car-runtime/calibration.json" <<'JSON'
{"version": 1, "period_ns": 20000000,
 "steering": {"min": 1100000, "mid": 1520000, "max": 1900000, "polarity": 1},
 "throttle": {"min": 1200000, "mid": 1480000, "max": 1700000, "polarity": -1}}
JSON
cp "$R/var/lib/car-runtime/calibration.json" "$work/racer-calibration.json"
echo "onnx bytes" >"$R/var/lib/car-runtime/models/mine/model.onnx"
echo "secret-hash" >"$R/var/lib/car-runtime/web/password.argon2"
up=$work/upgrade
dpkg-deb -R "$deb" "$up"
sed -i "s/^Version: .*/Version: ${version}+up1/" "$up/DEBIAN/control"
dpkg-deb -b "$up" "$R/tmp/car-runtime-up.deb" >/dev/null
if in_root dpkg -i /tmp/car-runtime-up.deb >"$work/upgrade.log" 2>&1; then ok "upgrade to ${version}+up1"; else bad "upgrade failed: $(cat "$work/upgrade.log")"; fi
grep -q "# edited by the racer" "$R/etc/car-runtime/config.toml" && ok "upgrade kept the edited config" || bad "upgrade lost the config edit"
cmp -s "$work/racer-calibration.json" "$R/var/lib/car-runtime/calibration.json" && ok "upgrade kept the calibration" || bad "upgrade lost the calibration"
[ -f "$R/var/lib/car-runtime/models/mine/model.onnx" ] && ok "upgrade kept uploaded models" || bad "upgrade lost uploaded models"
grep -q secret-hash "$R/var/lib/car-runtime/web/password.argon2" && ok "upgrade kept the web password" || bad "upgrade lost the web password"
grep -q "password unchanged" "$work/upgrade.log" && ok "postinst on upgrade: password unchanged" || bad "postinst on upgrade did not see the existing password"

# A corrupt calibration must not leave the car on its last pulse: `neutral`
# writes the stock neutral and still fails so the racer hears of it.
echo 1600000 >"$R$chip/pwm0/duty_cycle"; echo 1700000 >"$R$chip/pwm1/duty_cycle"
echo '{"marker": "half-written' >"$R/var/lib/car-runtime/calibration.json"
if as_service /usr/bin/car-runtime neutral --config /etc/car-runtime/config.toml >"$work/neutral-bad.log" 2>&1; then
  bad "neutral with a corrupt calibration exited 0"
else
  t=$(cat "$R$chip/pwm0/duty_cycle"); s=$(cat "$R$chip/pwm1/duty_cycle")
  [ "$t" = 1446000 ] && [ "$s" = 1450000 ] && grep -q "calibration.json" "$work/neutral-bad.log" \
    && ok "corrupt calibration: stock neutral written, error names the file, exit non-zero" \
    || bad "corrupt calibration: throttle $t steering $s; $(cat "$work/neutral-bad.log")"
fi
cp "$work/racer-calibration.json" "$R/var/lib/car-runtime/calibration.json"

# Removal with the car "driving" (a non-neutral pulse on the wire): prerm
# must leave the racer's neutral on the PWM even without systemd.
echo 1600000 >"$R$chip/pwm0/duty_cycle"; echo 1700000 >"$R$chip/pwm1/duty_cycle"
if in_root dpkg -r car-runtime >"$work/remove.log" 2>&1; then ok "dpkg -r"; else bad "dpkg -r failed: $(cat "$work/remove.log")"; fi
cat "$work/remove.log"
t=$(cat "$R$chip/pwm0/duty_cycle"); s=$(cat "$R$chip/pwm1/duty_cycle")
[ "$t" = 1480000 ] && [ "$s" = 1520000 ] && ok "removal left the PWM at the racer's neutral (throttle $t, steering $s)" \
  || bad "after removal throttle $t steering $s, want the calibration's mids 1480000 / 1520000"
[ ! -e "$R/usr/bin/car-runtime" ] && ok "binary removed" || bad "binary still there after remove"
[ -f "$R/etc/car-runtime/config.toml" ] && [ -f "$R/var/lib/car-runtime/calibration.json" ] \
  && ok "remove kept config and calibration" || bad "remove deleted config or calibration"
if in_root dpkg -P car-runtime >"$work/purge.log" 2>&1; then ok "dpkg -P"; else bad "dpkg -P failed: $(cat "$work/purge.log")"; fi
[ ! -e "$R/etc/car-runtime" ] && [ ! -e "$R/var/lib/car-runtime" ] && ok "purge deleted config and state" || bad "purge left /etc/car-runtime or /var/lib/car-runtime"
[ ! -e "$R/etc/systemd/system/multi-user.target.wants/car-runtime.service" ] && ok "purge removed the enablement" || bad "enable link left after purge"

echo "package suite took $((SECONDS - t0))s"
[ $fail -eq 0 ] && echo "package suite: all checks passed"
exit $fail
