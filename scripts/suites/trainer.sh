#!/usr/bin/env bash
# Suite "trainer": the trainer crate (burn; a ~20-minute cold release build,
# then cached in CARGO_TARGET_DIR). Clippy and its tests (release: training
# in a debug build would crawl; they include imitation, PPO and Python
# reward files), then the bundled default model, which the
# trainer made, must drive 3 of 3 laps of re:Invent 2018 through the car's
# own code (`car-trainer eval`). TRAINER_FULL=1 also trains a model from
# nothing on the project's own tracks and evaluates it on the shared ones
# (the issue's 10-minute target; not in the default run because it takes
# those 10 minutes). Exit 0 pass, 77 skipped (reason printed), else fail.
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
ensure_cargo || exit 1
# pyo3 embeds CPython for racers' reward files: it links libpython3.
ensure_apt python3-dev || { echo "skipped: cannot install python3-dev (libpython3 for the embedded reward functions)"; exit 77; }

# burn must never reach the car: it is a 20-minute build the daemon never needs.
if cargo tree --locked -p car-runtime -e normal,build | grep -q 'burn'; then
  echo "FAIL: burn is in car-runtime's dependency tree" >&2; exit 1
fi

t0=$SECONDS
cargo build --release --locked -p trainer --all-targets || { echo "FAIL: trainer build" >&2; exit 1; }
echo "trainer build took $((SECONDS - t0))s"
cargo clippy --release --locked -p trainer --all-targets -- -D warnings || exit 1
cargo test --release --locked -p trainer || exit 1

bin=${CARGO_TARGET_DIR:-target}/release/car-trainer
shared=../shared/tracks
if [ ! -d "$shared" ]; then
  echo "note: $shared absent; evaluating the bundled model on the project's own tracks only"
  tracks=(oval technical speedway)
else
  tracks=("$shared/reinvent_base.npy" "$shared/reInvent2019_track.npy" oval technical speedway)
fi
rc=0
# The car's own check accepts the trainer's output unchanged.
# The car's own check of the bundled model, with the binary the cargo-test
# suite built: `cargo run -p car-runtime` alone would resolve car-runtime's
# features apart from the workspace's and rebuild tract, axum and the rest.
build_workspace_bins || { echo "FAIL: workspace build" >&2; exit 1; }
"${CARGO_TARGET_DIR:-target}/debug/car-runtime" check-model models/default --json || rc=1
for t in "${tracks[@]}"; do
  json=$("$bin" eval --model models/default --track "$t" --laps 3 --max-speed 60 --json) || { rc=1; continue; }
  echo "bundled model on $t: $json"
  python3 - "$json" "$t" <<'EOF' || rc=1
import json, sys
r = json.loads(sys.argv[1])
ok = r["laps_completed"] == 3 and r["offtrack_events"] == 0
print(("ok" if ok else "FAIL") + f": {sys.argv[2]}: {r['laps_completed']}/3 laps, {r['offtrack_events']} off-track, laps {r['lap_times_s']}")
sys.exit(0 if ok else 1)
EOF
done

if [ "${TRAINER_FULL:-0}" = 1 ] && [ -d "$shared" ]; then
  out=$(mktemp -d)
  start=$SECONDS
  "$bin" train --out "$out/model" --time-budget 10 --seed 1 \
    --eval-track "$shared/reinvent_base.npy,$shared/reInvent2019_track.npy" || rc=1
  echo "train from nothing: $((SECONDS - start)) s wall clock"
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); [print(e['track'], e['laps_completed'], e['lap_times_s'], e['offtrack_events']) for e in r['result']['evaluation']]" "$out/model/report.json" || rc=1
  rm -rf "$out"
fi
exit $rc
