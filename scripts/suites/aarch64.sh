#!/usr/bin/env bash
# Suite "aarch64": builds the daemon's crates (sim, servo-driver, policy,
# car-runtime, web-ui; not the trainer) for aarch64 exactly as the arm64
# package is built (Debian's rustc-web, zig linking against glibc 2.31,
# release profile, same target dir, so the package build after it reuses the
# dependencies) and runs their unit tests under qemu-aarch64-static, the
# runner set in .cargo/config.toml, plus the in-process integration tests of
# policy and car-control (engines, the control loop, the frame arena that is
# the daemon's global allocator). Exit 0 pass, 77 skipped (reason printed),
# else fail.
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/package.sh
. scripts/lib.sh

[ "$(id -u)" -eq 0 ] || { echo "skipped: needs root to install the arm64 toolchain (dpkg --add-architecture arm64)"; exit 77; }
ensure_cargo || exit 1
pkg_ensure_zigbuild || { echo "skipped: cannot install cargo-zigbuild and ziglang from PyPI"; exit 77; }
pkg_ensure_arm64_toolchain || { echo "skipped: cannot install rustc-web, libstd-rust-web-dev:arm64, gcc-aarch64-linux-gnu, qemu-user-static from Debian"; exit 77; }
pkg_aarch64_env
echo "rustc: $($RUSTC --version), cargo: $($CARGO --version), target dir: $CARGO_TARGET_DIR"

crates=(sim servo-driver policy car-control car-runtime web-ui)
args=()
for c in "${crates[@]}"; do args+=(-p "$c"); done

t0=$SECONDS
# --no-run first so build time and test time are reported apart.
cargo-zigbuild test --release --locked --no-run --target "aarch64-unknown-linux-gnu.$GLIBC_CEILING" "${args[@]}" --lib --bins || {
  echo "FAIL: aarch64 build of ${crates[*]}" >&2; exit 1; }
# Named, and with the same package list, so that cargo resolves the same
# features as above and builds nothing twice.
integration=("${args[@]}")
for t in arena control_loop alloc preprocess tract_backend tf_model ort_backend; do integration+=(--test "$t"); done
# Built, not run: car-runtime's own harness, because cargo only links the
# car-runtime executable (the model-check child below) for a package whose
# integration tests it builds.
cargo-zigbuild test --release --locked --no-run --target "aarch64-unknown-linux-gnu.$GLIBC_CEILING" "${integration[@]}" --test car_runtime || {
  echo "FAIL: aarch64 build of the policy and car-runtime integration tests" >&2; exit 1; }
echo "aarch64 build took $((SECONDS - t0))s"
# The daemon checks every model in a child car-runtime process. Under
# qemu-user a guest's execve of another aarch64 binary goes straight to the
# host kernel, which cannot run it here (no binfmt_misc), so the child dies
# with 127. On a real Pi the child is found beside the test binary; here the
# tests are pointed at a host script that runs that same aarch64 car-runtime
# under the same emulator.
checker=$CARGO_TARGET_DIR/qemu-checker.sh
child=$CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/release/car-runtime
[ -x "$child" ] || { echo "FAIL: the build left no $child for the model-check child" >&2; exit 1; }
printf '#!/bin/sh\nexec qemu-aarch64-static -L / %s "$@"\n' \
  "$child" >"$checker"
chmod +x "$checker"
export CAR_RUNTIME_CHECKER=$checker
t1=$SECONDS
cargo-zigbuild test --release --locked --target "aarch64-unknown-linux-gnu.$GLIBC_CEILING" "${args[@]}" --lib --bins
rc=$?
cargo-zigbuild test --release --locked --target "aarch64-unknown-linux-gnu.$GLIBC_CEILING" "${integration[@]}" || rc=1
echo "aarch64 tests under qemu took $((SECONDS - t1))s"
exit $rc
