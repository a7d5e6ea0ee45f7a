#!/usr/bin/env bash
# Tear down a SLURM started by up.sh: cancel its jobs first (stopping slurmd does not end
# running jobs), wait for them to leave, then stop only the daemons up.sh started, by their
# pid files under DIR.
#
#     scripts/slurm/down.sh DIR [--keep]     # --keep: leave DIR (logs) on disk
set -uo pipefail
dir="${1:?usage: down.sh DIR [--keep]}"
[ -f "$dir"/slurm.conf ] || { echo "down.sh: $dir holds no slurm.conf from up.sh" >&2; exit 2; }
export SLURM_CONF="$dir"/slurm.conf

if [ -f "$dir"/slurmctld.pid ] && kill -0 "$(cat "$dir"/slurmctld.pid)" 2>/dev/null; then
    scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 1 75); do
        [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
        sleep 0.2
    done
fi

stop() {  # stop the daemon whose pid file is $1, waiting up to 10 s before SIGKILL
    local pidfile="$1" pid
    [ -f "$pidfile" ] || return 0
    pid="$(cat "$pidfile")"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$pidfile"
}
stop "$dir"/slurmd.pid
stop "$dir"/slurmctld.pid
stop "$dir"/munge/munged.pid
[ "${2:-}" = "--keep" ] || rm -rf "$dir"
