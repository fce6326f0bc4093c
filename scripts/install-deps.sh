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
# make deploy-check: helm lint/template of charts/iscsi-csi and kustomize build of deploy/
HELM_VERSION=${HELM_VERSION:-v3.22.0}
KUSTOMIZE_VERSION=${KUSTOMIZE_VERSION:-v5.8.2}
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
GOBIN=${GOBIN:-$(go env GOPATH)/bin}
# go install PACKAGE@VERSION into GOBIN, unless the binary there was built from that module version
# (`go version -m` reads the module version the binary records); helm takes minutes to build on 2 CPUs
go_install() {
  local pkg=$1 version=$2 name bin have
  name=${pkg##*/}
  # the binary of .../kustomize/v5 is kustomize: go drops a major-version suffix
  if [[ $name =~ ^v[0-9]+$ ]]; then name=${pkg%/*}; name=${name##*/}; fi
  bin="$GOBIN/$name"
  have=$(go version -m "$bin" 2>/dev/null | awk -v pkg="$pkg" '$1 == "path" && $2 != pkg { exit } $1 == "mod" { print $3; exit }' || true)
  if [ "$have" = "$version" ]; then
    echo "install-deps: $bin is $version already"
    return 0
  fi
  GOBIN="$GOBIN" "${STEP_TIMEOUT[@]}" go install "$pkg@$version"
}
go_install github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity "$CSI_SANITY_VERSION"
go_install helm.sh/helm/v3/cmd/helm "$HELM_VERSION"
go_install sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION"
