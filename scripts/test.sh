#!/usr/bin/env bash
# The whole test suite. Installs what its suites need when it can, runs them,
# names every suite it had to skip, and ends with one summary line.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

passed=0; failed=0; skipped=0
failed_names=(); skipped_names=(); times=()

# run_suite NAME CMD...: exit 0 = pass, 77 = skipped (the suite says why), else fail.
run_suite() {
  local name=$1; shift
  echo; echo "=== suite: $name"
  local start=$SECONDS
  "$@"; local rc=$?
  local took=$((SECONDS - start))
  times+=("$name ${took}s")
  case $rc in
    0) passed=$((passed + 1)); echo "=== suite $name: passed (${took}s)";;
    77) skipped=$((skipped + 1)); skipped_names+=("$name"); echo "=== suite $name: SKIPPED (${took}s)";;
    *) failed=$((failed + 1)); failed_names+=("$name"); echo "=== suite $name: FAILED rc=$rc (${took}s)";;
  esac
}

ensure_cargo || exit 1
ensure_apt libclang-dev pkg-config || echo "warning: libclang-dev missing; the v4l crate will not build" >&2

# ONNX Runtime (from PyPI's wheel) lets the load-dynamic backend's tests run
# against the real library; without it they skip and this names it.
ort_note=""
if ensure_pip onnxruntime numpy && ORT_DYLIB_PATH=$(ort_dylib) && [ -n "$ORT_DYLIB_PATH" ]; then
  export ORT_DYLIB_PATH ORT_DISABLE_TELEMETRY=1
else
  unset ORT_DYLIB_PATH
  ort_note="onnxruntime-backend-tests (pip install onnxruntime failed)"
fi

suite_fmt() { cargo fmt --all -- --check; }
# The trainer (burn: a 20-minute cold build) has its own suite below.
suite_clippy() { cargo clippy --workspace --exclude trainer --all-targets --locked -- -D warnings; }
suite_cargo_test() { cargo test --workspace --exclude trainer --locked --no-fail-fast; }

run_suite fmt suite_fmt
run_suite clippy suite_clippy
run_suite cargo-test suite_cargo_test

# Further suites live in scripts/suites/NAME.sh. Cheap ones first; the ones
# that need release builds for other targets last, each given a time limit
# from what is left of the budget. CI has 90 minutes: when a suite would not
# fit (a cold machine), it is skipped and named, never silently dropped.
# The budget stays well under CI's limit so a slow machine still finishes.
# CAR_TEST_BUDGET_MIN overrides the budget (0 = unlimited; default 55 under CI).
budget_min=${CAR_TEST_BUDGET_MIN:-$([ -n "${CI:-}" ] && echo 55 || echo 0)}
# NAME:MINUTES_IT_NEEDS_AT_LEAST (a warm run is far quicker than that).
# fuzz: a cold instrumented build in its own target dir (26 min measured on
# 2 cores shared with three other builds; about 12 on a quiet machine, 20
# seen on CI; a warm one re-links in seconds), then CAR_FUZZ_SECONDS (15)
# per target, about 2 minutes for all of them. It goes last: on a cold
# machine it is the one suite whose ground (every parser) the cargo tests
# and the fault suite also cover, so it is the one to skip.
ordered=(browser:4 systemd:3 vm:5 trainer:22 aarch64:15 package:15 fuzz:14)
run_timed_suite() {
  local name=$1 need=$2 file=scripts/suites/$1.sh
  if [ "$budget_min" -eq 0 ]; then bash "$file"; return; fi
  local left=$(( budget_min * 60 - SECONDS ))
  if [ "$left" -lt $(( need * 60 )) ]; then
    echo "skipped: only $((left / 60)) min of the ${budget_min}-min budget left, suite $name needs at least $need"
    return 77
  fi
  timeout --signal=TERM --kill-after=30 "$left" bash "$file"; local rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "skipped: suite $name did not finish within the ${budget_min}-min budget ($left s left when it started)"
    return 77
  fi
  return "$rc"
}
for entry in "${ordered[@]}"; do
  name=${entry%%:*}; need=${entry##*:}
  [ -e "scripts/suites/$name.sh" ] || continue
  run_suite "$name" run_timed_suite "$name" "$need"
done
for s in scripts/suites/*.sh; do
  name=$(basename "$s" .sh)
  case " ${ordered[*]} " in *" $name:"*) continue;; esac
  run_suite "$name" bash "$s"
done

echo
[ -n "$ort_note" ] && skipped_names+=("$ort_note")
[ ${#skipped_names[@]} -gt 0 ] && echo "skipped suites: ${skipped_names[*]}"
[ ${#failed_names[@]} -gt 0 ] && echo "failed suites: ${failed_names[*]}"
# One line with every suite's time, cold or warm as this machine was: the
# figures the CI budget below is set from.
(IFS=,; echo "suite times (total ${SECONDS}s): ${times[*]}")
echo "suites: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
