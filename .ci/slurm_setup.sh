#!/usr/bin/env bash
# Bring up a live one-node Slurm cluster on this host, for CI and for trying the Slurm backend locally.
#   sudo .ci/slurm_setup.sh          # idempotent: returns at once when Slurm already answers
# Installs Debian's slurmctld slurmd slurm-client munge if missing, makes a munge key, writes
# /etc/slurm/slurm.conf for this host (its real CPUs and memory, from `slurmd -C`), starts munged,
# slurmctld and slurmd without systemd (works as root in a container), then waits until `sinfo` shows the
# node idle and a test `sbatch --wait` job succeeds. Exits non-zero with the reason if Slurm did not come up.
# Completed jobs are recorded by the controller in /var/log/slurm/jobcomp.log (no accounting database).
set -euo pipefail

say() { echo "$(date '+%F %T') slurm_setup: $*" >&2; }
die() {
    echo "slurm_setup: ERROR: $*" >&2
    for f in /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log /var/log/munge/munged.log; do
        [ -s "${f}" ] && { echo "--- last lines of ${f}:" >&2; tail -n 15 "${f}" >&2; }
    done
    exit 1
}

conf_dir=/etc/slurm
conf=${conf_dir}/slurm.conf
node=$(hostname -s)
timeout_s=${SLURM_SETUP_TIMEOUT:-90}

healthy() {
    # node answers and is usable, and a job really runs
    local state
    state=$(sinfo -h -n "${node}" -o '%T' 2>/dev/null | head -n1) || return 1
    case "${state}" in idle|mixed|allocated|completing) ;; *) return 1 ;; esac
    timeout 60 sbatch --quiet --wait --output=/dev/null --job-name=slurm_setup_check --wrap true >/dev/null 2>&1
}

if command -v sinfo >/dev/null 2>&1 && healthy; then
    say "Slurm is already up on ${node}: $(sinfo -h -o '%P %D %T %C' | head -n1)"
    exit 0
fi

[ "$(id -u)" = 0 ] || die "run me as root (installs packages and starts daemons)"

# ---- packages ----
missing=()
for p in slurmctld slurmd slurm-client munge; do
    dpkg-query -W -f='${Status}' "${p}" 2>/dev/null | grep -q "install ok installed" || missing+=("${p}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    # Keep the packages' maintainer scripts from starting daemons (no init system here): we start them below.
    policy=/usr/sbin/policy-rc.d
    made_policy=false
    if [ ! -e "${policy}" ]; then
        printf '#!/bin/sh\nexit 101\n' > "${policy}" && chmod +x "${policy}" && made_policy=true
    fi
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } >&2 \
        || { ${made_policy} && rm -f "${policy}"; die "apt-get install ${missing[*]} failed"; }
    ${made_policy} && rm -f "${policy}"
fi
for exe in munged slurmctld slurmd sbatch sinfo scontrol; do
    command -v "${exe}" >/dev/null 2>&1 || die "${exe} not found after installing the packages"
done

# ---- munge ----
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    say "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null 2>&1; then
        mungekey --create --keyfile=/etc/munge/munge.key --force
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "starting munged"
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged || die "munged did not start"
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n | unmunge >/dev/null || die "munge does not work (munge -n | unmunge)"
fi

# ---- slurm.conf for this host ----
# `slurmd -C` prints this host's hardware as a NodeName line; take its CPUs and RealMemory. Only CPUs (no
# socket/core/thread layout) so that every CPU is a schedulable unit even with hyper-threads.
hw=$(slurmd -C | head -n1)
cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<< "${hw}")
mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<< "${hw}")
[ -n "${cpus}" ] && [ -n "${mem}" ] || die "cannot read CPUs/RealMemory from 'slurmd -C': ${hw}"
install -d -m 0755 "${conf_dir}" /var/log/slurm /var/spool/slurmctld /var/spool/slurmd
new_conf=$(cat <<EOF
# Written by .ci/slurm_setup.sh: a one-node cluster on ${node} (${cpus} CPUs, ${mem} MB).
ClusterName=etser
SlurmctldHost=${node}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=$(( mem / cpus ))
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
MinJobAge=600
NodeName=${node} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
)
changed=false
if [ ! -f "${conf}" ] || [ "$(cat "${conf}")" != "${new_conf}" ]; then
    say "writing ${conf} (${cpus} CPUs, ${mem} MB)"
    printf '%s\n' "${new_conf}" > "${conf}"
    changed=true
fi

# ---- daemons ----
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if ${changed}; then
    # a new configuration: restart whatever runs with the old one
    for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
        if running "${pidfile}"; then kill "$(cat "${pidfile}")"; sleep 1; fi
    done
fi
if ! running /run/slurmctld.pid; then
    say "starting slurmctld"
    slurmctld || die "slurmctld did not start"
fi
for _ in $(seq 50); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
scontrol ping 2>/dev/null | grep -q UP || die "slurmctld does not answer (scontrol ping)"
if ! running /run/slurmd.pid; then
    say "starting slurmd"
    slurmd || die "slurmd did not start"
fi

# ---- wait for the node, then run a real job ----
deadline=$(( SECONDS + timeout_s ))
state=
while [ "${SECONDS}" -lt "${deadline}" ]; do
    state=$(sinfo -h -n "${node}" -o '%T' 2>/dev/null | head -n1 || true)
    case "${state}" in
        idle|mixed|allocated) break ;;
        down*|drain*) scontrol update NodeName="${node}" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 1
done
case "${state}" in idle|mixed|allocated) ;; *) die "node ${node} is '${state:-absent}' after ${timeout_s} s" ;; esac
timeout 60 sbatch --quiet --wait --output=/dev/null --job-name=slurm_setup_check --wrap true \
    || die "a test job (sbatch --wait --wrap true) did not succeed"
say "Slurm is up: $(sinfo -h -o 'partition %P, %D node, %T, CPUs (alloc/idle/other/total) %C' | head -n1)"
