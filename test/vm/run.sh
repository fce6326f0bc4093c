#!/usr/bin/env bash
# The real-kernel tier (`make vm-test`): boots the Debian kernel under QEMU (software emulation, via
# virtme-ng) with this machine's root shared read-only, and runs test/vm/guest.sh inside it: the real
# iscsid, udev, multipathd and tgtd on the guest's own loopback (no guest network), the driver from a
# copy in guest tmpfs, the scenario list and csi-sanity. The guest writes only to one work directory
# shared read-write (and to its own tmpfs overlays). Prints the guest's results and ends with the
# scenario runner's "N passed, N failed" line; exits non-zero when anything failed or the VM did not
# finish within VM_TIMEOUT_S.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

VNG=${VNG:-$repo/.vm/venv/bin/vng}
VM_TIMEOUT_S=${VM_TIMEOUT_S:-3300}
VM_CPUS=${VM_CPUS:-2}
VM_MEMORY=${VM_MEMORY:-3G}
SANITY_BIN=${CSI_SANITY:-$(go env GOPATH 2>/dev/null)/bin/csi-sanity}
KERNEL=${VM_KERNEL:-$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1 || true)}

[ -x "$VNG" ] || { echo "vm-test: virtme-ng not found at $VNG (run make deps)" >&2; exit 1; }
export PATH="$(dirname "$VNG"):$PATH"  # vng runs virtme-run from its own venv
[ -n "$KERNEL" ] && [ -r "$KERNEL" ] || { echo "vm-test: no kernel in /boot (linux-image-amd64; run make deps)" >&2; exit 1; }
[ -d "/lib/modules/${KERNEL#/boot/vmlinuz-}" ] || { echo "vm-test: no modules for $KERNEL" >&2; exit 1; }
[ -f dist/bundle/cli.js ] && [ -f dist/test/vm/scenarios.js ] || { echo "vm-test: build first (make build)" >&2; exit 1; }

work=$(mktemp -d /tmp/iscsi-csi-vm.XXXXXX)
keep=${VM_KEEP:-}
cleanup() { if [ -z "$keep" ]; then rm -rf "$work"; else echo "vm-test: work dir kept at $work"; fi; }
trap cleanup EXIT

# What the guest copies into its tmpfs: the build (the driver runs from its bundle, as in the image),
# the proto and the production node_modules only (the scenario runner's gRPC client)
# (loading thousands of small files over the 9p root is what makes an emulated node start slowly).
npm ls --omit=dev --parseable --all 2>/dev/null | sed "s|^$repo/||" | grep '^node_modules/' | sort -u \
  | awk 'BEGIN{last="//"} index($0, last "/") != 1 {print; last=$0}' > "$work/modules.txt"
tar -C "$repo" -cf "$work/app.tar" package.json proto dist/bundle dist/src dist/test -T "$work/modules.txt"
[ -x "$SANITY_BIN" ] && cp "$SANITY_BIN" "$work/csi-sanity"

echo "vm-test: booting $(basename "$KERNEL") (TCG, $VM_CPUS vCPUs, $VM_MEMORY), timeout ${VM_TIMEOUT_S}s"
started=$(date +%s)
set +e
# --disable-kvm: /dev/kvm exists on these machines but a guest vCPU never runs under it
timeout -k 30 "$VM_TIMEOUT_S" "$VNG" --run "$KERNEL" --disable-kvm --cpus "$VM_CPUS" --memory "$VM_MEMORY" \
  --rwdir "$work" --exec "bash $repo/test/vm/guest.sh $work '${VM_SCENARIOS:-}'" </dev/null >"$work/console.log" 2>&1
vm_rc=$?
set -e
echo "vm-test: guest ran $(( $(date +%s) - started )) s (vng exit $vm_rc)"
if [ -f "$work/results.txt" ]; then cat "$work/results.txt"; fi
rc=$(cat "$work/rc" 2>/dev/null || echo 1)
if [ "$rc" != 0 ] || [ "$vm_rc" != 0 ]; then
  echo "--- guest console (tail) ---"; tail -n 60 "$work/console.log"
  [ -s "$work/scenarios.stderr" ] && { echo "--- scenarios.stderr ---"; tail -n 30 "$work/scenarios.stderr"; }
  for f in "$work"/driver*.log; do [ -f "$f" ] && { echo "--- $(basename "$f") (tail) ---"; tail -n 40 "$f"; }; done
  [ -f "$work/results.txt" ] || echo "0 passed, 1 failed"
  exit 1
fi
