#!/usr/bin/env bash
# Bring up a single-node SLURM on this machine, everything on 127.0.0.1, for daskie's tests
# and examples:
#
#     scripts/slurm/up.sh [DIR]          # DIR: where its state lives (default: a new temp dir)
#     source DIR/env                     # SLURM_CONF for sbatch/squeue/scancel
#     scripts/slurm/down.sh DIR          # cancel its jobs, stop the daemons it started
#
# It installs Debian's slurmctld, slurmd, slurm-client and munge when they are missing and
# apt-get is there, then starts its own munged, slurmctld and slurmd with every socket, pid,
# log and state file under DIR and free TCP ports, so it touches no system-wide SLURM or
# munge and two of them can run side by side. The node offers this machine's CPUs and memory
# and one GRES gpu (a count only: no device file; daskie's GPU worker is a Dask resource
# GPU=1). On success the last line printed is DIR.
set -euo pipefail

need=(slurmctld slurmd sbatch munged)
missing=0
for c in "${need[@]}"; do command -v "$c" >/dev/null 2>&1 || missing=1; done
if [ "$missing" = 1 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "up.sh: SLURM is not installed and apt-get is not there" >&2; exit 3
    fi
    # Debian's postinst scripts start the daemons with the system's config unless
    # policy-rc.d says no (exit 101); add one only for the install, and only if none exists.
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    rc=0
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
             apt-get install -y -qq slurmctld slurmd slurm-client munge; }; } >/dev/null || rc=$?
    [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
    if [ "$rc" != 0 ]; then echo "up.sh: apt-get install of SLURM failed ($rc)" >&2; exit 3; fi
fi

dir="${1:-$(mktemp -d /tmp/daskie-slurm.XXXXXX)}"
mkdir -p "$dir"/state "$dir"/spool/daskie0 "$dir"/munge
dir="$(cd "$dir" && pwd)"
chmod 700 "$dir"/munge

# Free ports, chosen by the kernel (bound and released at once).
read -r ctld_port slurmd_port < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
PY
)

node=daskie0
cpus="$(nproc)"
# slurmd drains a node that claims more memory than it has: offer what `slurmd -C` sees.
mem="$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')"

# munge: its own key, socket, pid and log under DIR (no system munged needed).
dd if=/dev/urandom of="$dir"/munge/munge.key bs=1024 count=1 status=none
chmod 400 "$dir"/munge/munge.key
munged --force --key-file="$dir"/munge/munge.key --socket="$dir"/munge/munge.socket \
    --pid-file="$dir"/munge/munged.pid --log-file="$dir"/munge/munged.log \
    --seed-file="$dir"/munge/munged.seed

cat > "$dir"/slurm.conf <<CONF
ClusterName=daskie-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
# No cgroups in this container: track processes by their parents, bind no tasks.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=defer_batch=0
MessageTimeout=10
InactiveLimit=0
KillWait=5
NodeName=$node NodeHostname=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
cat > "$dir"/gres.conf <<CONF
NodeName=$node Name=gpu Count=1 File=/dev/null
CONF
printf 'export SLURM_CONF=%s\n' "$dir/slurm.conf" > "$dir"/env
export SLURM_CONF="$dir"/slurm.conf

slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF" -N "$node"

# Ready when the node is idle (slurmd registered with slurmctld).
for _ in $(seq 1 50); do
    state="$(sinfo -h -n "$node" -o %T 2>/dev/null || true)"
    case "$state" in idle*|mixed*) echo "$dir"; exit 0 ;; esac
    sleep 0.2
done
echo "up.sh: the node never became idle (state: ${state:-none}); logs in $dir" >&2
"$(dirname "$0")"/down.sh "$dir" --keep >&2 || true
exit 4
