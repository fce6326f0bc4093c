#!/usr/bin/env bash
# Runs inside the real-kernel VM (see test/vm/run.sh), as the guest's init command. $1 is the work
# directory shared read-write with the host; everything else the guest writes goes to its own tmpfs.
# Sets up the guest as a node would be (modules, udevd, iscsid, tgtd on loopback portals 127.0.0.1
# and 127.0.0.2), copies the driver into tmpfs, runs the scenario list and csi-sanity, and writes
# results.txt and rc into the work directory.
set -uo pipefail
work=$1
shift
only=${1:-}
results="$work/results.txt"
: >"$results"
echo 1 >"$work/rc"
log() { echo "[guest $(cut -d' ' -f1 /proc/uptime)s] $*"; }

app=/run/iscsi-csi-app
mkdir -p "$app" /run/lock/iscsi /var/lib/iscsi
log "copying the driver into tmpfs"
tar -C "$app" -xf "$work/app.tar"

for m in iscsi_tcp sd_mod dm_multipath; do modprobe "$m" || log "modprobe $m failed"; done
# a fresh initiator name per boot (the shared /etc has the build machine's, or none)
printf 'InitiatorName=iqn.2026-12.dev.tsdriver.vm:node-%s\n' "$(cut -c1-8 /proc/sys/kernel/random/uuid)" >/etc/iscsi/initiatorname.iscsi
rm -rf /etc/iscsi/nodes /etc/iscsi/send_targets /var/lib/iscsi/nodes /var/lib/iscsi/send_targets
log "starting udevd"
/lib/systemd/systemd-udevd --daemon
udevadm trigger --action=add >/dev/null 2>&1
udevadm settle -t 60 || log "udevadm settle timed out"
log "starting iscsid"
iscsid || log "iscsid failed to start"
log "starting tgtd"
tgtd --iscsi portal=127.0.0.1:3260 >"$work/tgtd.log" 2>&1
for _ in $(seq 1 100); do tgtadm --op show --mode sys >/dev/null 2>&1 && break; sleep 0.1; done
# tgtd 1.0.85 listens only on the last --iscsi portal= argument: a second portal is added at run time
tgtadm --op new --mode portal --param portal=127.0.0.2:3260 || log "could not add portal 127.0.0.2:3260"

log "running the scenarios"
export VM_WORK="$work" VM_APP="$app" VM_ONLY="$only"
cd "$app"
timeout -k 10 "${VM_SCENARIO_TIMEOUT_S:-3000}" node dist/test/vm/scenarios.js 2>"$work/scenarios.stderr" | tee -a "$results"
scen_rc=${PIPESTATUS[0]}
log "scenarios done (exit $scen_rc)"
dmesg >"$work/dmesg.txt" 2>&1 || true
passed=$(grep -cE '^ok ' "$results" || true)
failed=$(grep -cE '^not ok ' "$results" || true)
[ "$scen_rc" -eq 0 ] || [ "$failed" -gt 0 ] || failed=$((failed + 1))
echo "$passed passed, $failed failed" >>"$results"
[ "$failed" -eq 0 ] && echo 0 >"$work/rc"
log "done"
