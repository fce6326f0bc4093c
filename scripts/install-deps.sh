#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks for the tests, the demo and csi-sanity (run as root).
# Package install scripts must not start daemons: a system tgtd would listen on all interfaces
# (0.0.0.0:3260) and a system iscsid is not what the tests use. A policy-rc.d that denies every start
# is put in place for the install when the machine has none.
set -euo pipefail
cd "$(dirname "$0")/.."
# gcc, libc6-dev: the simulated host compiles its native fake-command client (test/sim/sim-cli.c)
PACKAGES=(tgt libiscsi-bin open-iscsi xfsprogs e2fsprogs btrfs-progs util-linux gcc libc6-dev)
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
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"
npm ci --no-fund --no-audit
GOBIN=${GOBIN:-$(go env GOPATH)/bin} go install "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@${CSI_SANITY_VERSION}"
