#!/usr/bin/env bash
# RUSTC_WRAPPER for the fuzz build (scripts/suites/fuzz.sh): adds libFuzzer's
# coverage instrumentation (what `cargo fuzz build -s none` passes, all on
# stable rustc) to this workspace's own crates only. tract, image, tokio and
# the rest compile as usual: instrumenting them would double the cold build
# and their coverage is not what we are looking for (a panic in them still
# aborts the target and is reported). Cargo calls: wrapper RUSTC ARGS...
rustc=$1; shift
crate=""
prev=""
for a in "$@"; do
  [ "$prev" = "--crate-name" ] && { crate=$a; break; }
  prev=$a
done
case " ${CAR_FUZZ_INSTRUMENT:-safe_io sim servo_driver policy web_ui fuzz_targets} " in
  *" $crate "*)
    exec "$rustc" "$@" \
      -Cpasses=sancov-module \
      -Cllvm-args=-sanitizer-coverage-level=4 \
      -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
      -Cllvm-args=-sanitizer-coverage-pc-table \
      -Cllvm-args=-sanitizer-coverage-trace-compares \
      --cfg fuzzing ;;
esac
exec "$rustc" "$@"
