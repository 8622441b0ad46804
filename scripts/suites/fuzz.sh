#!/usr/bin/env bash
# Suite "fuzz": coverage-guided fuzzing (libFuzzer, on stable Rust) of every
# parser and decoder that takes outside data (fuzz/src/lib.rs lists them).
# Builds the one libFuzzer binary with coverage instrumentation on this
# workspace's own crates only (fuzz/rustc-wrapper.sh), in its own target dir
# so it never waits on the shared one, then runs each target for
# CAR_FUZZ_SECONDS (default 15: about two minutes for all of them) from its
# seeds (fuzz/corpus/<target>) and every earlier crash
# (fuzz/regressions/<target>). A crash, panic, timeout or out-of-memory
# fails the suite; the input is copied into fuzz/regressions/<target>/ and
# its path printed: commit it with the fix, and the normal cargo test
# replays it from then on. CAR_FUZZ_TARGETS="jpeg web" runs only those.
# Exit 0 pass, 77 skipped (reason printed), else fail.
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
ensure_cargo || exit 1
# libfuzzer-sys compiles libFuzzer (C++) in its build script.
if ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1; then
  ensure_apt g++ || { echo "skipped: no C++ compiler for libFuzzer and g++ could not be installed"; exit 77; }
fi

ROOT=$PWD
export CARGO_TARGET_DIR=${CAR_FUZZ_TARGET_DIR:-/var/tmp/car-fuzz-target}
export RUSTC_WRAPPER=$ROOT/fuzz/rustc-wrapper.sh
seconds=${CAR_FUZZ_SECONDS:-15}
targets=(${CAR_FUZZ_TARGETS:-jpeg metadata model track calibration archive web})

t0=$SECONDS
cargo build --locked --profile fuzz -p fuzz-targets --features libfuzzer --bin car-fuzz \
  || { echo "FAIL: fuzz build" >&2; exit 1; }
echo "fuzz build took $((SECONDS - t0))s"
bin=$CARGO_TARGET_DIR/fuzz/car-fuzz
[ -x "$bin" ] || { echo "FAIL: $bin missing after the build" >&2; exit 1; }

# Largest input per target: a 640x480 camera frame for jpeg; a few times the
# seeds elsewhere (longer inputs only slow each execution down).
max_len() {
  case $1 in
    jpeg) echo 65536;; archive|track|model) echo 16384;; *) echo 4096;;
  esac
}

work=$(mktemp -d /var/tmp/car-fuzz-suite.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail=0
summary=()
for t in "${targets[@]}"; do
  [ -d "fuzz/corpus/$t" ] || { echo "FAIL: no seed folder fuzz/corpus/$t" >&2; fail=1; continue; }
  # The grown corpus (not committed, see .gitignore) carries coverage over
  # from one run to the next on the same machine.
  grown=fuzz/grown/$t
  mkdir -p "$grown" "fuzz/regressions/$t" "$work/$t"
  echo "--- fuzz $t for ${seconds}s"
  CAR_FUZZ_TARGET=$t "$bin" "$grown" "fuzz/corpus/$t" "fuzz/regressions/$t" \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len="$(max_len "$t")" \
    -print_final_stats=1 -artifact_prefix="$work/$t/" >"$work/$t.log" 2>&1
  rc=$?
  grep -E '^(INFO: (seed corpus|Running with|Loaded))|#[0-9]+.*(INITED|DONE)' "$work/$t.log"
  last=$(grep -E '^#[0-9]+' "$work/$t.log" | tail -n1)
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/$t.log" | grep -o '[0-9]*$')
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$work/$t.log" | grep -o '[0-9]*$')
  cov=$(echo "$last" | grep -o 'cov: [0-9]*' | grep -o '[0-9]*')
  ft=$(echo "$last" | grep -o 'ft: [0-9]*' | grep -o '[0-9]*')
  summary+=("$(printf '%-12s %9s execs %7s/s  cov %6s  ft %6s' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}")")
  found=$(find "$work/$t" -type f | head -n 20)
  if [ "$rc" -ne 0 ] || [ -n "$found" ]; then
    fail=1
    echo "FAIL: fuzz target $t (libFuzzer exit $rc):" >&2
    grep -E -A40 '^==[0-9]+==|panicked at|^SUMMARY|ERROR: libFuzzer' "$work/$t.log" | head -n 80 >&2
    for f in $found; do
      # crash-<sha1>, timeout-<sha1>, oom-<sha1>, leak-<sha1>, slow-unit-<sha1>
      dest=fuzz/regressions/$t/$(basename "$f")
      cp "$f" "$dest"
      echo "crash input saved: $ROOT/$dest (rename it to say what it is, fix the bug, commit both)" >&2
    done
  fi
done

echo
echo "fuzz summary (${seconds}s per target):"
printf '  %s\n' "${summary[@]}"
[ $fail -eq 0 ] && echo "fuzz suite: every target ran clean"
exit $fail
