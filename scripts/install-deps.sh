#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks for the tests, the demo and csi-sanity (run as root).
# Package install scripts must not start daemons: a system tgtd would listen on all interfaces
# (0.0.0.0:3260) and a system iscsid is not what the tests use. A policy-rc.d that denies every start
# is put in place for the install when the machine has none.
set -euo pipefail
cd "$(dirname "$0")/.."
# gcc, libc6-dev: the simulated host compiles its native fake-command client (test/sim/sim-cli.c);
# procps: pgrep/pkill, which tests use to find processes left behind
PACKAGES=(tgt libiscsi-bin open-iscsi xfsprogs e2fsprogs btrfs-progs util-linux gcc libc6-dev procps)
# the real-kernel tier (test/vm): QEMU, a Debian kernel with its modules (iscsi_tcp, sd_mod,
# dm_multipath), multipathd and udevd for the guest, busybox-static and a Python venv for virtme-ng
VM_PACKAGES=(qemu-system-x86 linux-image-amd64 multipath-tools udev kmod busybox-static python3-venv)
VIRTME_NG_VERSION=${VIRTME_NG_VERSION:-1.42}
VM_VENV=${VM_VENV:-.vm/venv}
# every step is bounded: a hung mirror or proxy fails the run instead of stalling it
STEP_TIMEOUT=(timeout -k 30 1200)
CSI_SANITY_VERSION=${CSI_SANITY_VERSION:-v5.5.0}
POLICY=/usr/sbin/policy-rc.d

added_policy=""
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\n# installed by iscsi-csi scripts/install-deps.sh for the duration of apt-get install\nexit 101\n' > "$POLICY"
  chmod 0755 "$POLICY"
  added_policy=1
fi
cleanup() { if [ -n "$added_policy" ]; then rm -f "$POLICY"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
command -v go >/dev/null || { echo "install-deps: Go is needed (go install of csi-sanity) and is not on PATH" >&2; exit 1; }
"${STEP_TIMEOUT[@]}" apt-get update -qq
"${STEP_TIMEOUT[@]}" apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" "${VM_PACKAGES[@]}"
if [ ! -x "$VM_VENV/bin/vng" ] || ! "$VM_VENV/bin/vng" --version 2>/dev/null | grep -qF "$VIRTME_NG_VERSION"; then
  rm -rf "$VM_VENV"
  "${STEP_TIMEOUT[@]}" python3 -m venv "$VM_VENV"
  "${STEP_TIMEOUT[@]}" "$VM_VENV/bin/pip" install -q --disable-pip-version-check "virtme-ng==$VIRTME_NG_VERSION"
fi
"${STEP_TIMEOUT[@]}" npm ci --no-fund --no-audit
GOBIN=${GOBIN:-$(go env GOPATH)/bin} "${STEP_TIMEOUT[@]}" go install "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@${CSI_SANITY_VERSION}"
