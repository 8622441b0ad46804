#!/usr/bin/env bash
# Build the car's Debian packages:
#   dist/car-runtime_<version>_amd64.deb   AWS DeepRacer (Intel Atom, Ubuntu 20.04)
#   dist/car-runtime_<version>_arm64.deb   Raspberry Pi-class boards with a PCA9685
#
#   scripts/package.sh [amd64] [arm64]     (default: both)
#
# The binaries are built with `cargo zigbuild` against glibc 2.31 (the stock
# DeepRacer's), packed by `cargo deb --no-build`, and refused if any of them
# needs a newer GLIBC symbol. Installs what it needs (pip: ziglang,
# cargo-zigbuild; crates.io: cargo-deb; Debian: rustc-web with the arm64 std
# and the cross binutils) when it can. See INSTALL.md.
#
# Sourced (by scripts/suites/*.sh) it only defines the helpers below.

GLIBC_CEILING=2.31
# Release builds for the packages get their own target dirs, kept between
# runs: they share nothing with the workspace's debug builds anyway, and
# arm64 uses another rustc.
AMD64_TARGET_DIR=${AMD64_TARGET_DIR:-/var/tmp/car-target-deb}
AARCH64_TARGET_DIR=${AARCH64_TARGET_DIR:-/var/tmp/car-target-aarch64}

pkg_log() { echo "package: $*" >&2; }

# apt-get install with the quirks of this kind of machine: Docker-style images
# delete downloaded .debs after every dpkg run (docker-clean), which breaks
# multi-arch installs that need several dpkg runs; retrying resumes them.
pkg_apt() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
  pkg_log "apt-get install ${missing[*]}"
  if [ ! -f /var/tmp/.car-apt-updated ] || [ -n "$(find /var/tmp/.car-apt-updated -mmin +600 2>/dev/null)" ] \
     || printf '%s\n' "${missing[@]}" | grep -q ':arm64'; then
    apt-get -o DPkg::Lock::Timeout=300 update -qq >&2 || return 1
    touch /var/tmp/.car-apt-updated 2>/dev/null || true
  fi
  local i
  for i in 1 2 3 4; do
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
      --no-install-recommends "${missing[@]}" >&2 && return 0
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -y -qq --fix-broken install >&2 || true
  done
  return 1
}

pkg_ensure_zigbuild() {
  command -v cargo-zigbuild >/dev/null 2>&1 && python3 -m ziglang version >/dev/null 2>&1 && return 0
  # lib.sh's venv when sourced (a system Python may refuse pip: PEP 668).
  if declare -F ensure_pip >/dev/null; then
    ensure_pip ziglang cargo-zigbuild || return 1
  else
    pkg_log "pip install ziglang cargo-zigbuild"
    python3 -m pip install -q ziglang cargo-zigbuild >&2 || return 1
  fi
  command -v cargo-zigbuild >/dev/null 2>&1 && python3 -m ziglang version >/dev/null 2>&1
}

pkg_ensure_cargo_deb() {
  cargo deb --version >/dev/null 2>&1 && return 0
  pkg_log "cargo install cargo-deb (a few minutes, once)"
  CARGO_TARGET_DIR=/var/tmp/cargo-install-target cargo install --locked cargo-deb >&2
}

# Debian's rustc-web ships the aarch64 standard library rustup cannot fetch here.
pkg_ensure_arm64_toolchain() {
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    [ "$(id -u)" -eq 0 ] || return 1
    dpkg --add-architecture arm64 || return 1
    rm -f /var/tmp/.car-apt-updated
  fi
  pkg_apt rustc-web cargo-web libstd-rust-web-dev:arm64 libc6:arm64 gcc-aarch64-linux-gnu \
    libc6-dev-arm64-cross binutils-aarch64-linux-gnu qemu-user-static libclang-dev || return 1
  [ -x /usr/bin/rustc ] && /usr/bin/rustc --print target-libdir --target aarch64-unknown-linux-gnu >/dev/null 2>&1
}

# bindgen (the v4l crate) parses the target's kernel headers: point clang at
# the Debian cross sysroot when building for aarch64.
pkg_aarch64_env() {
  export RUSTC=/usr/bin/rustc
  export CARGO_TARGET_DIR=$AARCH64_TARGET_DIR
  export BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu="--sysroot=/usr/aarch64-linux-gnu"
  # Debian's cargo matches its rustc (rustup's would mix versions in one
  # target dir); cargo-zigbuild re-runs the cargo named by CARGO.
  export CARGO=/usr/bin/cargo
}

# Highest GLIBC_x.y version a binary needs (readelf works for any ELF arch).
pkg_glibc_ceiling() {
  readelf -W --version-info "$1" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1
}

# Fail when $1 needs a GLIBC symbol newer than GLIBC_CEILING.
pkg_check_glibc() {
  local bin=$1 top
  top=$(pkg_glibc_ceiling "$bin")
  if [ -z "$top" ]; then
    pkg_log "$bin: no GLIBC version needs found (not a glibc binary?)"
    return 1
  fi
  if [ "$(printf '%s\n%s\n' "$top" "$GLIBC_CEILING" | sort -V | tail -n1)" != "$GLIBC_CEILING" ]; then
    pkg_log "$bin needs GLIBC_$top, newer than the $GLIBC_CEILING of the stock DeepRacer; symbols:"
    readelf -W --dyn-syms "$bin" | grep -E "GLIBC_$top( |$)" >&2 || true
    return 1
  fi
  pkg_log "$bin: highest GLIBC symbol version GLIBC_$top (ceiling $GLIBC_CEILING): ok"
}

pkg_version() {
  cargo metadata --no-deps --format-version 1 --manifest-path car-runtime/Cargo.toml 2>/dev/null |
    python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="car-runtime"))'
}

# Stage what goes to /usr/share/car-runtime/models beside the binary, where
# the cargo-deb asset `target/release/deb-models/**/*` finds it.
pkg_stage_models() {
  local release_dir=$1 stage=$1/deb-models
  rm -rf "$stage"
  mkdir -p "$stage"
  cat >"$stage/README" <<'EOF'
car-runtime drives with the model bundled in /usr/bin/car-runtime when
[model] path in /etc/car-runtime/config.toml is empty. Models uploaded from
the web UI live in /var/lib/car-runtime/models and survive upgrades.
EOF
  if [ -d models/default ] && [ -n "$(ls -A models/default)" ]; then
    cp -r models/default "$stage/default"
    pkg_log "bundling models/default into /usr/share/car-runtime/models/default"
  else
    pkg_log "warning: no models/default in the tree; the package ships only the model built into the binary"
  fi
}

# pkg_build ARCH: build the binary and the .deb for amd64 or arm64.
pkg_build() {
  local arch=$1 triple variant=() target_dir
  case $arch in
    amd64) triple=x86_64-unknown-linux-gnu ;;
    arm64) triple=aarch64-unknown-linux-gnu; variant=(--variant arm64) ;;
    *) pkg_log "unknown architecture $arch (amd64 or arm64)"; return 2 ;;
  esac
  (
    set -e
    local cargo=cargo
    export CARGO_TARGET_DIR=$AMD64_TARGET_DIR
    if [ "$arch" = arm64 ]; then
      cargo=/usr/bin/cargo
      pkg_ensure_arm64_toolchain || { pkg_log "cannot install the arm64 toolchain (rustc-web, libstd-rust-web-dev:arm64)"; exit 1; }
      pkg_aarch64_env
    fi
    target_dir=$CARGO_TARGET_DIR
    pkg_log "$arch: cargo zigbuild --release --target $triple.$GLIBC_CEILING ($(${RUSTC:-rustc} --version 2>/dev/null || echo rustc), target dir $target_dir)"
    local start=$SECONDS
    "$cargo" zigbuild --release --locked --target "$triple.$GLIBC_CEILING" -p car-runtime >&2
    pkg_log "$arch: built in $((SECONDS - start))s"
    local release_dir=$target_dir/$triple/release
    pkg_check_glibc "$release_dir/car-runtime"
    pkg_stage_models "$release_dir"
    local version out
    version=$(pkg_version)
    out=dist/car-runtime_${version}_${arch}.deb
    mkdir -p dist
    rm -f "$out"
    # The strip that matches the target (aarch64-linux-gnu-strip for arm64).
    "$cargo" deb --no-build --locked -p car-runtime --target "$triple" "${variant[@]}" \
      --deb-version "$version" --strip -o "$out" >&2
    pkg_log "$arch: wrote $out ($(du -h "$out" | cut -f1))"
  )
}

pkg_main() {
  set -euo pipefail
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  . scripts/lib.sh
  ensure_cargo
  local archs=("$@")
  [ ${#archs[@]} -eq 0 ] && archs=(amd64 arm64)
  pkg_apt libclang-dev pkg-config binutils || pkg_log "warning: could not install libclang-dev (needed by the v4l crate)"
  pkg_ensure_zigbuild || { pkg_log "cannot install cargo-zigbuild (pip install ziglang cargo-zigbuild)"; return 1; }
  pkg_ensure_cargo_deb || { pkg_log "cannot install cargo-deb"; return 1; }
  local a
  for a in "${archs[@]}"; do
    pkg_build "$a"
  done
  ls -l dist/*.deb
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  pkg_main "$@"
fi
