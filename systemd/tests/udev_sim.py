#!/usr/bin/env python3
"""Replay kernel uevents through 60-car-runtime.rules against a fake sysfs.

No real PWM or GPIO device exists in CI, so `udevadm test` has nothing to run
on. This reads the rules file strictly (an unknown key, operator or a broken
line is an error, as udev would log it and skip the rule), matches each given
event the way udev does for the keys the file uses, and runs the rule's RUN
programs for real, with `/sys` mapped to a fake tree (and optionally inside a
chroot where the package created the `gpio` group). The caller then checks
what a real user can write.

    udev_sim.py check RULES
    udev_sim.py run RULES --sys FAKE_SYS [--chroot ROOT] EVENT...

An EVENT is `ACTION=add,SUBSYSTEM=pwm,KERNEL=pwmchip0,DEVPATH=/devices/x/pwmchip0[,ENV_KEY=value]`.
"""

import argparse
import fnmatch
import re
import shlex
import subprocess
import sys

MATCH_KEYS = {"ACTION", "SUBSYSTEM", "KERNEL"}
ASSIGN_KEYS = {"RUN", "GROUP", "MODE", "OWNER"}
TOKEN = re.compile(r'\s*([A-Z_]+)(\{([A-Za-z0-9_]+)\})?\s*(==|!=|\+=|:=|=)\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')


class RuleError(Exception):
    pass


def parse(path):
    """Return [(lineno, [(key, attr, op, value)])]; raise RuleError naming the line."""
    rules = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    buf, start = "", 0
    for i, raw in enumerate(lines, 1):
        if not buf:
            start = i
        line = raw.rstrip()
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        text, buf = buf.strip(), ""
        if not text or text.startswith("#"):
            continue
        pos, tokens = 0, []
        while pos < len(text):
            m = TOKEN.match(text, pos)
            if not m:
                raise RuleError(f"{path}:{start}: cannot parse near: {text[pos:pos + 40]!r}")
            key, _, attr, op, value, _ = m.groups()
            if key == "ENV":
                if attr is None:
                    raise RuleError(f"{path}:{start}: ENV needs {{NAME}}")
            elif attr is not None:
                raise RuleError(f"{path}:{start}: {key} takes no {{}}")
            if key in MATCH_KEYS or key == "ENV":
                if op not in ("==", "!="):
                    raise RuleError(f"{path}:{start}: {key} is a match key, {op} is not a match")
            elif key in ASSIGN_KEYS:
                if op in ("==", "!="):
                    raise RuleError(f"{path}:{start}: {key} is an assignment, not a match")
                if key == "RUN" and not (value.startswith("/") or value.startswith("builtin")):
                    raise RuleError(f"{path}:{start}: RUN needs an absolute program path: {value!r}")
            else:
                raise RuleError(f"{path}:{start}: unknown key {key}")
            tokens.append((key, attr, op, value))
            pos = m.end()
        if not any(t[0] in ASSIGN_KEYS for t in tokens):
            raise RuleError(f"{path}:{start}: rule assigns nothing")
        rules.append((start, tokens))
    return rules


def matches(tokens, event):
    for key, attr, op, pattern in tokens:
        if key in ASSIGN_KEYS:
            continue
        value = event.get(attr if key == "ENV" else key, "")
        hit = any(fnmatch.fnmatchcase(value, p) for p in pattern.split("|"))
        if hit != (op == "=="):
            return False
    return True


def expand(value, event):
    def env(m):
        return event.get(m.group(1), "")

    value = re.sub(r"\$env\{([A-Za-z0-9_]+)\}", env, value)
    value = value.replace("$devpath", event["DEVPATH"]).replace("%p", event["DEVPATH"])
    value = value.replace("$kernel", event["KERNEL"]).replace("%k", event["KERNEL"])
    return value


def run(rules, fake_sys, chroot, events):
    ran = 0
    for event in events:
        for lineno, tokens in rules:
            if not matches(tokens, event):
                continue
            for key, _, _, value in tokens:
                if key != "RUN":
                    continue
                argv = shlex.split(expand(value, event))
                # Map the real sysfs onto the fake tree, inside shell snippets too.
                argv = [re.sub(r"(?<![\w/])/sys(?=/|$)", fake_sys, a) for a in argv]
                if chroot:
                    argv = ["chroot", chroot] + argv
                print(f"udev_sim: {event['ACTION']} {event['DEVPATH']}: line {lineno}: {' '.join(argv)}")
                res = subprocess.run(argv)
                if res.returncode != 0:
                    print(f"udev_sim: line {lineno} RUN failed with {res.returncode}", file=sys.stderr)
                    return 1
                ran += 1
    if ran == 0:
        print("udev_sim: no rule ran for these events", file=sys.stderr)
        return 1
    return 0


def parse_event(s):
    ev = dict(kv.split("=", 1) for kv in s.split(","))
    for k in ("ACTION", "SUBSYSTEM", "KERNEL", "DEVPATH"):
        if k not in ev:
            raise SystemExit(f"event {s!r} lacks {k}")
    return ev


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["check", "run"])
    ap.add_argument("rules")
    ap.add_argument("--sys", dest="fake_sys")
    ap.add_argument("--chroot")
    ap.add_argument("events", nargs="*")
    a = ap.parse_intermixed_args()
    try:
        rules = parse(a.rules)
    except (RuleError, OSError) as e:
        print(f"udev_sim: {e}", file=sys.stderr)
        return 1
    if a.cmd == "check":
        print(f"udev_sim: {a.rules}: {len(rules)} rules parse")
        return 0
    if not a.fake_sys or not a.events:
        ap.error("run needs --sys and at least one event")
    return run(rules, a.fake_sys, a.chroot, [parse_event(e) for e in a.events])


if __name__ == "__main__":
    sys.exit(main())
