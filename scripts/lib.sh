# Shared shell helpers for scripts/*.sh. Sourced, not run.

# Install Debian packages when we can (root with apt), quietly; return 1 if
# they are still missing so callers can skip a suite and say so.
ensure_apt() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && sudo="sudo -n" || return 1
  fi
  command -v apt-get >/dev/null 2>&1 || return 1
  echo ">> apt-get install ${missing[*]}" >&2
  if [ ! -f /var/tmp/.car-apt-updated ] || [ -n "$(find /var/tmp/.car-apt-updated -mmin +600 2>/dev/null)" ]; then
    $sudo apt-get update -qq >&2 || return 1
    touch /var/tmp/.car-apt-updated 2>/dev/null || true
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 || return 1
}

# A cargo new enough for the workspace (rust-version 1.92). Prefer rustup's.
# Build the workspace's binaries (into $CARGO_TARGET_DIR/debug) exactly as
# the cargo-test suite builds them: the same package selection, so the same
# features, so after that suite this is a no-op. A narrower
# `cargo build -p car-runtime` resolves other features and builds the whole
# dependency tree (tract, axum, ...) a second time.
build_workspace_bins() {
  cargo test --no-run --quiet --workspace --exclude trainer --locked
}

ensure_cargo() {
  export PATH="$HOME/.cargo/bin:$PATH"
  if command -v cargo >/dev/null 2>&1; then return 0; fi
  if command -v curl >/dev/null 2>&1; then
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >&2 && return 0
  fi
  echo "cargo not found: install Rust 1.92 or newer (https://rustup.rs)" >&2
  return 1
}

# Build output shared between checkouts (CI clones afresh each run).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/car-target}"

# Python packages for suites that compare against or load Python-side tools
# (onnxruntime, opencv, cargo-zigbuild...). A venv under /var/tmp keeps them
# out of the system Python (PEP 668) and survives between runs.
CAR_VENV="${CAR_VENV:-/var/tmp/car-venv}"
ensure_pip() {
  if [ ! -x "$CAR_VENV/bin/python3" ]; then
    python3 -m venv "$CAR_VENV" >&2 2>/dev/null || { ensure_apt python3-venv && python3 -m venv "$CAR_VENV" >&2; } || return 1
  fi
  local missing=()
  for p in "$@"; do
    "$CAR_VENV/bin/python3" -m pip show -q "${p%%[=<>]*}" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo ">> pip install ${missing[*]}" >&2
    "$CAR_VENV/bin/python3" -m pip install -q --disable-pip-version-check "${missing[@]}" >&2 || return 1
  fi
  export PATH="$CAR_VENV/bin:$PATH"
}

# Path of the ONNX Runtime shared library inside the venv's onnxruntime wheel.
ort_dylib() {
  "$CAR_VENV/bin/python3" - <<'PY' 2>/dev/null
import glob, os, onnxruntime
libs = sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so*")))
print(libs[-1] if libs else "")
PY
}
