#!/usr/bin/env bash
# Runs csi-sanity against a driver started here, and ends with one line
# "csi-sanity: N passed, N failed". Extra arguments go to csi-sanity (e.g. --ginkgo.focus).
#   SANITY_TARGET=node   the driver in node mode on this host's real iscsiadm (identity checks only)
#   SANITY_TARGET=sim    the driver on the simulated host (`npm run sim`), controller + node; its tgt pool
#                        is an xfs made with reflinks (-m reflink=1) on a loop device this script makes,
#                        so the snapshot and clone specs run on FICLONE copies as in production
set -euo pipefail
cd "$(dirname "$0")/.."

SANITY_BIN=${CSI_SANITY:-$(command -v csi-sanity || echo "$(go env GOPATH)/bin/csi-sanity")}
TARGET=${SANITY_TARGET:-node}
READY_TIMEOUT_S=60
# sparse: the pool's volumes are 32 MiB each and reflinked snapshots share their blocks
POOL_FS_SIZE=${SANITY_POOL_SIZE:-2G}
CMD_TIMEOUT=(timeout -k 5 60)
work=$(mktemp -d /tmp/csi-sanity.XXXXXX)
sock="$work/csi.sock"
log="$work/driver.log"
out="$work/sanity.out"
pid=""
pool_dev=""
pool_mnt=""

cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  if [ -n "$pool_mnt" ] && mountpoint -q "$pool_mnt"; then
    "${CMD_TIMEOUT[@]}" umount "$pool_mnt" || "${CMD_TIMEOUT[@]}" umount -l "$pool_mnt" || true
  fi
  if [ -n "$pool_dev" ]; then "${CMD_TIMEOUT[@]}" losetup -d "$pool_dev" || true; fi
  # never remove files through a pool that is still mounted
  if [ -z "$pool_mnt" ] || ! mountpoint -q "$pool_mnt"; then rm -rf "$work"; fi
}
trap cleanup EXIT

# the tgt pool on its own xfs with reflinks, on a real loop device
make_reflink_pool() {
  truncate -s "$POOL_FS_SIZE" "$work/pool.img"
  pool_dev=$("${CMD_TIMEOUT[@]}" losetup --find --show "$work/pool.img")
  "${CMD_TIMEOUT[@]}" mkfs.xfs -q -f -m reflink=1 "$pool_dev"
  pool_mnt="$work/pool-fs"
  mkdir -p "$pool_mnt"
  "${CMD_TIMEOUT[@]}" mount "$pool_dev" "$pool_mnt"
}

case "$TARGET" in
  node) node dist/bundle/cli.js --mode node --endpoint "unix://$sock" --log-level warn >"$log" 2>&1 & pid=$! ;;
  sim)
    make_reflink_pool
    node dist/test/sim/main.js --endpoint "unix://$sock" --pool-dir "$pool_mnt/pool" --log-level warn >"$work/sim.json" 2>"$log" & pid=$! ;;
  *) echo "unknown SANITY_TARGET $TARGET" >&2; exit 2 ;;
esac

for _ in $(seq 1 $((READY_TIMEOUT_S * 10))); do
  [ -S "$sock" ] && break
  kill -0 "$pid" 2>/dev/null || { echo "driver exited before serving:"; cat "$log"; exit 1; }
  sleep 0.1
done
[ -S "$sock" ] || { echo "driver did not serve within ${READY_TIMEOUT_S}s"; cat "$log"; exit 1; }

# One csi-sanity run per access type (SANITY_ACCESS_TYPES, e.g. "mount block"; empty = csi-sanity's
# default), all against the same driver; the closing line sums them.
total_passed=0
total_failed=0
rc=0
for access in ${SANITY_ACCESS_TYPES:-default}; do
  extra=()
  [ "$access" = default ] || extra=(--csi.testvolumeaccesstype "$access")
  echo "=== csi-sanity (${access}) ==="
  rm -rf "$work/mnt"; mkdir -p "$work/mnt"
  set +e
  timeout -k 30 1800 "$SANITY_BIN" --csi.endpoint "unix://$sock" \
    --csi.mountdir "$work/mnt/target" --csi.stagingdir "$work/mnt/staging" \
    --ginkgo.no-color "${extra[@]}" "$@" 2>&1 | tee "$out"
  run_rc=${PIPESTATUS[0]}
  set -e
  # ginkgo's summary: "SUCCESS! -- 3 Passed | 0 Failed | 0 Pending | 94 Skipped"
  summary=$(grep -E '[0-9]+ Passed \| [0-9]+ Failed' "$out" | tail -n 1 || true)
  if [ -z "$summary" ]; then
    echo "csi-sanity (${access}) printed no summary"; total_failed=$((total_failed + 1)); rc=1; continue
  fi
  total_passed=$((total_passed + $(sed -E 's/.* ([0-9]+) Passed.*/\1/' <<<"$summary")))
  total_failed=$((total_failed + $(sed -E 's/.* ([0-9]+) Failed.*/\1/' <<<"$summary")))
  [ "$run_rc" -eq 0 ] || rc=$run_rc
done

if [ "$rc" -ne 0 ]; then echo "driver log (tail):"; tail -n 80 "$log"; fi
echo "csi-sanity: ${total_passed} passed, ${total_failed} failed"
exit "$rc"
