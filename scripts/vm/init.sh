#!/bin/busybox sh
# PID 1 of the VM test (scripts/vm-test.sh): loads vivid and i2c-stub, runs
# the real car-runtime against them, prints "VMTEST key value" lines for the
# host to check, and powers off. Runs under busybox only.
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
ip link set lo up 2>/dev/null
. /etc/vmtest.env
say() { echo "VMTEST $*"; }
finish() { say done; sync; poweroff -f; }

while read -r mod args; do
  # shellcheck disable=SC2086
  insmod "/lib/modules/$mod" $args || say error "insmod $mod failed"
done < /etc/modules.load

i=0
while [ ! -e /dev/video0 ] || [ ! -e /dev/i2c-0 ]; do
  i=$((i + 1)); [ $i -gt 50 ] && { say error "no /dev/video0 or /dev/i2c-0"; ls /dev; finish; }
  usleep 100000
done
say boot_s "$(cut -d' ' -f1 /proc/uptime)"
# The battery gauge's charge byte (register 0x03 of 0x3f): 0xd9 is level 9
# of 11 in the stock table.
i2cset -y 0 0x3f 0x03 0xd9 b || say error "i2cset of the battery gauge failed"

# busybox i2cget parses the register as hex even without 0x: always pass 0xNN.
reg() { i2cget -y 0 0x40 "$(printf '0x%02x' "$1")" b; }
# One channel's OFF count (ON must read 0); read twice so a write landing
# between the low and high byte cannot tear the value.
off_count() {
  base=$1; n=0
  while [ $n -lt 5 ]; do
    a=$(( ($(reg $((base + 3))) << 8) | $(reg $((base + 2))) ))
    b=$(( ($(reg $((base + 3))) << 8) | $(reg $((base + 2))) ))
    [ "$a" = "$b" ] && break
    n=$((n + 1))
  done
  on=$(( ($(reg $((base + 1))) << 8) | $(reg "$base") ))
  echo "$a/$on"
}
# prescale, mode1, throttle off/on, steering off/on
regs() {
  echo "prescale=$(( $(reg 0xfe) )) mode1=$(( $(reg 0x00) )) throttle=$(off_count $((6 + 4 * THROTTLE_CH))) steering=$(off_count $((6 + 4 * STEERING_CH)))"
}
vivid_dev() { ls /sys/bus/platform/drivers/vivid/ | grep '^vivid\.' | head -n1; }

if [ "$MODE" = probe ]; then
  # Steady capture for the frame-rate figure, then a run with an unplug.
  /bin/v4l2_probe --seconds "$SECS" --fps 15 > /tmp/steady.json 2> /tmp/steady.err
  say steady_json "$(cat /tmp/steady.json)"
  /bin/v4l2_probe --seconds 5 --fps 15 > /tmp/probe.json 2> /tmp/probe.err &
  pid=$!
  sleep "$UNPLUG_AT"
  dev=$(vivid_dev); echo "$dev" > /sys/bus/platform/drivers/vivid/unbind; say unplugged "$dev"
  usleep 700000
  echo "$dev" > /sys/bus/platform/drivers/vivid/bind; say replugged "$dev"
  wait $pid; say probe_rc $?
  say probe_json "$(cat /tmp/probe.json)"
  sed 's/^/VMTEST log /' /tmp/probe.err | tail -n 20
  finish
fi

run() { # run NAME: the daemon in autonomous mode, in the background
  car-runtime run --config /etc/car.toml --model /model --backend tract \
    --autonomous --max-speed "$MAX_SPEED" --duration 120 --json \
    > "/tmp/$1.json" 2> "/tmp/$1.err" &
  pid=$!
}
stop() { # stop NAME: SIGTERM, then the registers and the summary
  t0=$(cut -d' ' -f1 /proc/uptime)
  kill -TERM $pid; wait $pid; rc=$?
  say "$1_rc" "$rc"
  say "$1_regs_after_term" "$(regs)"
  say "$1_json" "$(cat "/tmp/$1.json")"
  grep -m3 -E 'camera|WARN|ERROR|error' "/tmp/$1.err" | sed "s/^/VMTEST $1_log /"
  grep -m1 'battery level' "/tmp/$1.err" | sed "s/^/VMTEST $1_battery /"
}

# Run 1: steady driving, frame rate, commanded pulses, SIGTERM -> neutral.
run steady
sleep "$SECS"
say steady_regs_driving "$(regs)"
stop steady

# Run 2: unplug the camera (unbind the vivid device) while driving.
# Start-up (the model check child, the engine, the camera) takes seconds
# under TCG: wait until the car drives (the throttle leaves the neutral
# that run 1 ended on), at most 15 s, then a second more of driving.
throttle_now() { regs | sed 's/.*throttle=\([0-9]*\).*/\1/'; }
neutral_throttle=$(throttle_now)
run unplug
i=0
while [ "$i" -lt 150 ] && [ "$(throttle_now)" = "$neutral_throttle" ]; do usleep 100000; i=$((i + 1)); done
sleep 1
say unplug_regs_before "$(regs)"
dev=$(vivid_dev)
echo "$dev" > /sys/bus/platform/drivers/vivid/unbind && say unplugged "$dev"
usleep 600000
say unplug_regs_unplugged "$(regs)"
echo "$dev" > /sys/bus/platform/drivers/vivid/bind && say replugged "$dev"
sleep 3
say unplug_regs_replugged "$(regs)"
stop unplug
finish
