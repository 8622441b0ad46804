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
# The debug profile (optimised in this workspace) holds 15 fps under TCG and
# builds far faster than release; vm-test.sh links it statically in its own
# target dir.
export VM_PROFILE=${VM_PROFILE:-debug}
exec bash scripts/vm-test.sh
