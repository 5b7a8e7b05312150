#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, to try `snakemake --profile workflow/profiles/slurm` without a
# cluster (tests/test_slurm.py starts it the same way). Linux, as root; Debian/Ubuntu's slurm-wlm and munge are
# installed with apt when missing.
#
#   workflow/scripts/slurm_local.sh start DIR   # config, state and logs in DIR; prints the line to eval
#   eval "$(workflow/scripts/slurm_local.sh env DIR)"   # SLURM_CONF for sbatch, squeue, snakemake
#   workflow/scripts/slurm_local.sh stop DIR
#
# The node is this machine with its CPUs and memory, and two fake GPUs (GRES gpu:<model>:2, two plain files as
# devices): jobs asking for --gpus=<model>:N with N <= 2 are accepted and run on the CPU. It listens on ports
# SLURM_LOCAL_PORT (default 6817) and the next one, uses munged at its default socket (started when none answers)
# and, while it runs, leaves slurmd's copy of the configuration in /run/slurm/conf, where clients without SLURM_CONF
# look; stop removes that copy (else every later snakemake start waits 10 s: the SLURM executor plugin asks the
# stopped controller for its configuration when it loads).
# No accounting storage: `sacct` answers nothing, so use the status command squeue
# (PGPS_SLURM_STATUS_COMMAND=squeue, the default this script's env prints).
# Exit status 77 (and one line) where it cannot run: not root, not Linux, or no apt-get to install with.
set -euo pipefail

command=${1:-}
dir=${2:-}
if [[ -z $command || -z $dir ]]; then
    echo "usage: $0 start|env|stop DIR" >&2
    exit 2
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
conf=$dir/slurm.conf
port=${SLURM_LOCAL_PORT:-6817}
gpu_model=${SLURM_LOCAL_GPU_MODEL:-a100}

skip() {
    echo "SKIP: no local SLURM cluster: $*" >&2
    exit 77
}

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null &&
        command -v sbatch >/dev/null; then
        return
    fi
    command -v apt-get >/dev/null || skip "slurm-wlm and munge are missing and there is no apt-get to install them"
    echo "installing slurm-wlm and munge with apt-get (about a minute)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends slurm-wlm munge >"$dir/apt.log" 2>&1 ||
        { apt-get update -q >>"$dir/apt.log" 2>&1 &&
            apt-get install -y -q --no-install-recommends slurm-wlm munge >>"$dir/apt.log" 2>&1; } ||
        skip "apt-get install slurm-wlm munge failed (see $dir/apt.log)"
}

write_config() {
    local host cpus memory
    host=$(hostname -s)
    cpus=$(nproc --all)
    memory=$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)
    mkdir -p "$dir/state" "$dir/spool"
    : >"$dir/gpu0"
    : >"$dir/gpu1"
    cat >"$conf" <<EOF
ClusterName=pgpslocal
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# a job's processes are its process group (nothing in the workflow starts a session of its own): SLURM's signals
# and its SIGKILL after KillWait reach them all, also a process whose parent died first (a requeue can kill the
# job's Snakemake before the shell that ignores SIGTERM starts the trainer; linuxproc lost that trainer)
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
SchedulerType=sched/backfill
MpiDefault=none
SwitchType=switch/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ReturnToService=2
# squeue keeps finished jobs 10 minutes (the executor plugin's squeue status needs more than 3 x its interval)
MinJobAge=600
# a job at its time limit gets SIGTERM, then SIGKILL after KillWait seconds (SLURM's default: 30): enough for a
# trainer to finish its iteration and write its checkpoint also on a machine whose disk others keep busy (an fsync
# of the tiny tests' checkpoint took up to 30 s on the shared CI machine)
KillWait=120
# the time limit and --signal are checked every few seconds, not every 30 s
SchedulerParameters=bf_interval=5
# slurmd fetches this file from slurmctld and caches it where clients without SLURM_CONF look (/run/slurm/conf):
# the srun inside a job, which snakemake-executor-plugin-slurm starts without the SLURM_* variables
SlurmctldParameters=enable_configless
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory Gres=gpu:$gpu_model:2 State=UNKNOWN
PartitionName=gpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$dir/gres.conf" <<EOF
NodeName=$host Name=gpu Type=$gpu_model File=$dir/gpu[0-1]
EOF
}

print_env() {
    echo "export SLURM_CONF=$conf PGPS_SLURM_STATUS_COMMAND=squeue PGPS_SLURM_PARTITION=gpu"
}

stop() {
    local name pid
    for name in slurmd slurmctld munged; do
        pid=$(cat "$dir/$name.pid" 2>/dev/null || true)
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
        fi
        rm -f "$dir/$name.pid"
    done
    # slurmd's cached configuration (configless mode), if it is a local cluster's and no slurmd runs any more
    if grep -qsx "ClusterName=pgpslocal" /run/slurm/conf/slurm.conf && ! pgrep -x slurmd >/dev/null; then
        rm -rf /run/slurm/conf
    fi
}

case $command in
start)
    [[ $(uname -s) == Linux ]] || skip "this script runs on Linux only"
    [[ $(id -u) == 0 ]] || skip "starting slurmctld, slurmd and munged needs root"
    install
    stop
    write_config
    # munged at its default socket (slurmd fetches the configuration before it reads AuthInfo); one that runs
    # already is used (the same /etc/munge/munge.key)
    if ! munge -n </dev/null | unmunge >/dev/null 2>&1; then
        mkdir -p /run/munge
        munged --force --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munge.seed"
    fi
    export SLURM_CONF=$conf
    slurmctld -c -f "$conf"
    slurmd --conf-server "127.0.0.1:$port"
    for _ in $(seq 300); do
        if [[ $(sinfo -h -o %t 2>/dev/null) == idle ]]; then
            print_env
            exit 0
        fi
        sleep 0.2
    done
    echo "the local SLURM cluster did not come up in 60 s; its logs:" >&2
    tail -n 20 "$dir"/slurmctld.log "$dir"/slurmd.log >&2 || true
    stop
    exit 1
    ;;
env) print_env ;;
stop) stop ;;
*)
    echo "usage: $0 start|env|stop DIR" >&2
    exit 2
    ;;
esac
