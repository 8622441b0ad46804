#!/usr/bin/env bash
# Test-suite hook: the real-kernel VM test (scripts/vm-test.sh).
# Exit 0 pass, 77 skipped (reason printed), anything else fail.
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
if ! ensure_apt qemu-system-x86 busybox-static linux-image-amd64 cpio xz-utils zstd binutils; then
  echo "vm suite skipped: cannot install qemu-system-x86, busybox-static and linux-image-amd64 with apt (not root, or no apt)"
  exit 77
fi
# The binaries the cargo-test suite built (the debug profile, optimised in
# this workspace, holds 15 fps under TCG), with their shared libraries
# copied into the initramfs: a cold CI run then builds the daemon once, not
# a second time statically in a target dir of its own (27 minutes on two
# cores). `VM_LINK=static bash scripts/vm-test.sh` still boots a static
# build, as on a board with other libraries.
export VM_PROFILE=${VM_PROFILE:-debug}
if [ "${VM_LINK:-dynamic}" = dynamic ]; then
  ensure_cargo || exit 1
  build_workspace_bins || { echo "vm suite: the workspace build failed" >&2; exit 1; }
  export VM_LINK=dynamic VM_NO_BUILD=1
fi
exec bash scripts/vm-test.sh
