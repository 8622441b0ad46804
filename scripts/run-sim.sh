#!/usr/bin/env bash
# The main job: the daemon drives the simulated car with the bundled model;
# the web UI is on http://127.0.0.1:8080. Extra arguments go to `car-runtime run`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_cargo
ensure_apt libclang-dev pkg-config || echo "warning: could not install libclang-dev (needed to build the V4L2 camera support)" >&2
cargo build --release -p car-runtime
exec "$CARGO_TARGET_DIR/release/car-runtime" run --sim "$@"
