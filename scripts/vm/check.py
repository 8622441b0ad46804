#!/usr/bin/env python3
"""Reads the VM console log of scripts/vm-test.sh, checks what a racer would
see (frame rate, PCA9685 registers while driving, neutral after SIGTERM and
while the camera is unplugged) and prints ONE summary line. Exit 0 pass,
1 fail."""
import argparse, json, re, sys

ap = argparse.ArgumentParser()
ap.add_argument("log")
ap.add_argument("--mode", default="daemon")
ap.add_argument("--secs", type=float, required=True)
ap.add_argument("--max-speed", type=float, required=True)
ap.add_argument("--vm-ms", type=int, required=True)
ap.add_argument("--build-seconds", type=int, default=0)
ap.add_argument("--kernel", default="?")
ap.add_argument("--calibration", default="")
ap.add_argument("--link", default="?")
a = ap.parse_args()

FPS = 15
OSC, FREQ = 25_000_000, 50
PRESCALE = round(OSC / (4096 * FREQ)) - 1  # 121
TICK_NS = (PRESCALE + 1) * 1e9 / OSC

kv = {}
logs = []
for line in open(a.log, errors="replace"):
    m = re.match(r"^VMTEST (\S+) ?(.*)$", line.rstrip("\n"))
    if not m:
        continue
    k, v = m.groups()
    if k.endswith("_log") or k == "log" or k == "error":
        logs.append(f"{k}: {v}")
    kv[k] = v

fails = []
def need(cond, msg):
    if not cond:
        fails.append(msg)
    return cond

def regs(key):
    v = kv.get(key)
    if not need(v is not None, f"missing {key}"):
        return None
    d = dict(x.split("=", 1) for x in v.split())
    out = {"prescale": int(d["prescale"]), "mode1": int(d["mode1"])}
    for ch in ("throttle", "steering"):
        off, on = d[ch].split("/")
        out[ch], out[ch + "_on"] = int(off), int(on)
    return out

def counts(ns):
    return min(4095, max(0, round(ns / TICK_NS)))

def pulse(cal, v):
    adj = v * cal["polarity"]
    mid = cal["mid"]
    if adj < 0:
        return mid + adj * (mid - cal["min"])
    if adj > 0:
        return mid + adj * (cal["max"] - mid)
    return mid

vm_s = a.vm_ms / 1000
if a.mode == "probe":
    st = json.loads(kv.get("steady_json") or "{}")
    j = json.loads(kv.get("probe_json") or "{}")
    fr, secs = st.get("frames", 0), st.get("seconds", 0)
    want = 0.95 * FPS * secs
    need(secs > 0 and fr >= want, f"{fr} frames in {secs:.2f}s < 95% of {FPS} fps ({want:.0f})")
    need(st.get("non_monotonic", 1) == 0, "steady: timestamps or sequence went backwards")
    need(j.get("fps_set") and abs(j["fps_set"] - FPS) < 0.5, f"driver rate {j.get('fps_set')} fps, asked {FPS}")
    need(j.get("lost", 0) >= 1, "the unplug was not noticed")
    need(j.get("frames_after_loss", 0) > FPS, f"only {j.get('frames_after_loss')} frames after the replug")
    need(j.get("non_monotonic", 1) == 0, "timestamps or sequence went backwards")
    print(f"vm-test(probe): kernel {a.kernel}, {j.get('driver')} {j.get('format')} {j.get('width')}x{j.get('height')} "
          f"fps_set={j.get('fps_set')} steady: frames={fr} in {secs:.2f}s (need >= {want:.0f}; {st.get('fps_measured', 0):.2f} fps by driver timestamps) "
          f"dropped={st.get('dropped')}; unplug run: lost={j.get('lost')} frames_after_replug={j.get('frames_after_loss')} "
          f"max_frame_age={st.get('max_frame_age_ms', 0):.1f}ms vm={vm_s:.1f}s "
          + ("PASS" if not fails else "FAIL: " + "; ".join(fails)))
    if fails:
        print("\n".join(logs[-20:]), file=sys.stderr)
    sys.exit(1 if fails else 0)

try:
    cal = json.loads(a.calibration)
    thr, st = cal["throttle"], cal["steering"]
except Exception:
    print(f"vm-test: FAIL: `car-runtime calibration show --json` gave no calibration: {a.calibration!r}")
    sys.exit(1)

neutral_t = counts(thr["mid"])
# The centre-seeker fixture model's actions all run at 1 m/s (its max), so the stock
# throttle curve gives exactly 1.0 before the max-speed scale.
scale = a.max_speed / 100.0
drive_t = counts(pulse(thr, 1.0 * scale))
# Its steering is one of 7 angles -30..30 in 10 degree steps, normalised by 30.
steer_ok = {counts(pulse(st, k / 3)) for k in range(-3, 4)}
steer_ok |= {c + d for c in steer_ok for d in (-1, 1)}  # f32 vs f64 rounding

def check_driving(key):
    r = regs(key)
    if r is None:
        return None
    need(r["prescale"] == PRESCALE, f"{key}: PRE_SCALE {r['prescale']} != {PRESCALE}")
    need(r["mode1"] & 0x10 == 0, f"{key}: MODE1 {r['mode1']:#x} still asleep")
    need(r["throttle"] == drive_t, f"{key}: throttle count {r['throttle']} != commanded {drive_t}")
    need(r["steering"] in steer_ok, f"{key}: steering count {r['steering']} is no action of the model")
    need(r["throttle_on"] == 0 and r["steering_on"] == 0, f"{key}: ON counts not 0")
    return r

def check_neutral(key):
    r = regs(key)
    if r is None:
        return None
    need(r["throttle"] == neutral_t, f"{key}: throttle count {r['throttle']} != neutral {neutral_t}")
    return r

def summary(name):
    try:
        return json.loads(kv.get(f"{name}_json") or "")
    except ValueError:
        fails.append(f"{name}: no JSON summary")
        return {}

drv = check_driving("steady_regs_driving")
after = check_neutral("steady_regs_after_term")
need(kv.get("steady_rc") == "0", f"steady run exit code {kv.get('steady_rc')}")
s1 = summary("steady")
frames, el = s1.get("frames", 0), s1.get("elapsed_s", 0) or 0
want = 0.95 * FPS * el
need(el > 0 and frames >= want, f"{frames} frames in {el:.2f}s < 95% of {FPS} fps ({want:.0f})")
c2p = s1.get("capture_to_pwm_ms") or {}
fps_line = [l for l in logs if "camera" in l and "fps" in l]
need(fps_line, "the daemon did not log the camera's negotiated rate")
battery = kv.get("steady_battery", "")
need("battery level 9/11" in battery,
     f"the daemon did not read level 9/11 from the gauge (i2c-stub 0x3f): {battery!r}")

check_driving("unplug_regs_before")
unpl = check_neutral("unplug_regs_unplugged")
back = check_driving("unplug_regs_replugged")
check_neutral("unplug_regs_after_term")
need(kv.get("unplug_rc") == "0", f"unplug run exit code {kv.get('unplug_rc')}")
s2 = summary("unplug")
need((s2.get("source_errors") or 0) >= 1, "the unplug produced no source error")

print(
    f"vm-test: kernel {a.kernel}; frames {frames} in {el:.2f}s = {frames / el if el else 0:.2f} fps "
    f"(need >= {want:.0f}, 95% of {FPS} fps), dropped {s1.get('dropped')}; "
    f"PRE_SCALE {drv['prescale'] if drv else '?'} (want {PRESCALE}); "
    f"driving throttle/steering counts {drv['throttle'] if drv else '?'}/{drv['steering'] if drv else '?'} "
    f"(commanded throttle {drive_t} at {a.max_speed:.0f}% max speed); "
    f"after SIGTERM throttle {after['throttle'] if after else '?'} (neutral {neutral_t}); "
    f"battery gauge {'level 9/11' if 'battery level 9/11' in battery else '?'} over i2c-dev; "
    f"camera unplugged: throttle {unpl['throttle'] if unpl else '?'}, replugged: {back['throttle'] if back else '?'}; "
    # vivid stamps a frame with its ideal time, which can lie after the
    # dequeue, so this is no latency figure for a real camera.
    f"capture->PWM p50/p99 {c2p.get('p50', 0) or 0:.1f}/{c2p.get('p99', 0) or 0:.1f} ms (vivid's synthetic stamps); "
    f"loop p50/p99 {(s1.get('latency_ms') or {}).get('p50', 0) or 0:.1f}/{(s1.get('latency_ms') or {}).get('p99', 0) or 0:.1f} ms under TCG; "
    f"VM {vm_s:.1f}s ({a.link} binary, build {a.build_seconds}s) "
    + ("PASS" if not fails else "FAIL: " + "; ".join(fails))
)
if fails:
    print("\n".join(logs[-30:]), file=sys.stderr)
sys.exit(1 if fails else 0)
