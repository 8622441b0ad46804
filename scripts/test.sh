#!/usr/bin/env bash
# The whole test suite. Installs what its suites need when it can, runs them,
# names every suite it had to skip, and ends with one summary line.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

passed=0; failed=0; skipped=0
failed_names=(); skipped_names=()

# run_suite NAME CMD...: exit 0 = pass, 77 = skipped (the suite says why), else fail.
run_suite() {
  local name=$1; shift
  echo; echo "=== suite: $name"
  local start=$SECONDS
  "$@"; local rc=$?
  local took=$((SECONDS - start))
  case $rc in
    0) passed=$((passed + 1)); echo "=== suite $name: passed (${took}s)";;
    77) skipped=$((skipped + 1)); skipped_names+=("$name"); echo "=== suite $name: SKIPPED (${took}s)";;
    *) failed=$((failed + 1)); failed_names+=("$name"); echo "=== suite $name: FAILED rc=$rc (${took}s)";;
  esac
}

ensure_cargo || exit 1
ensure_apt libclang-dev pkg-config || echo "warning: libclang-dev missing; the v4l crate will not build" >&2

suite_fmt() { cargo fmt --all -- --check; }
suite_clippy() { cargo clippy --workspace --all-targets --locked -- -D warnings; }
suite_cargo_test() { cargo test --workspace --locked; }

run_suite fmt suite_fmt
run_suite clippy suite_clippy
run_suite cargo-test suite_cargo_test

# Further suites live in scripts/suites/NAME.sh (browser, vm, package, aarch64...).
for s in scripts/suites/*.sh; do
  [ -e "$s" ] || continue
  run_suite "$(basename "$s" .sh)" bash "$s"
done

echo
[ ${#skipped_names[@]} -gt 0 ] && echo "skipped suites: ${skipped_names[*]}"
[ ${#failed_names[@]} -gt 0 ] && echo "failed suites: ${failed_names[*]}"
echo "suites: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
