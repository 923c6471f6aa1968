#!/usr/bin/env bash
# Single-node Slurm cluster on this machine, for the integration test and CI.
#
#   slurm/local_cluster.sh [--install] start    # start munged, slurmctld, slurmd; prints the export lines
#   slurm/local_cluster.sh status               # daemons, sinfo, squeue
#   slurm/local_cluster.sh stop                 # stop the daemons started by `start` and delete the state dir
#   eval "$(slurm/local_cluster.sh start | grep '^export')"   # start and point this shell's clients at it
#
# Debian's `slurm-wlm` and `munge` are used as installed; with --install (or
# ROBUSTDIAG_SLURM_INSTALL=1) missing packages are installed with apt-get (needs root).
# Everything (slurm.conf, munge key and socket, spool, state, logs, pid files) lives in one
# directory, ${SLURM_LOCAL_DIR:-/tmp/robustdiag-slurm}; the daemons listen on 127.0.0.1 only
# (CommunicationParameters=NoInAddrAny,NoCtldInAddrAny) and on non-default ports so a system Slurm is not disturbed.
# No cgroups: proctrack/linuxproc and task/none. Cores and memory are consumable (cons_tres,
# CR_CPU_Memory, DefMemPerCPU) so several 1-CPU jobs run side by side.
# There is no accounting database, so `sacct` has nothing to say; submitit asks it for the state of
# jobs without a result (cancelled, killed) and would wait forever. `start` therefore puts a small
# `sacct` in $SLURM_LOCAL_DIR/bin that answers submitit's query from squeue (finished jobs stay
# visible for MinJobAge=1 h) and prints `export PATH=...` for it.
#
# Environment:
#   SLURM_LOCAL_DIR          state directory                      (default /tmp/robustdiag-slurm)
#   SLURM_LOCAL_CTLD_PORT    slurmctld port                       (default 16817)
#   SLURM_LOCAL_SLURMD_PORT  slurmd port                          (default 16818)
#   SLURM_LOCAL_PARTITION    partition name                       (default debug)
#   SLURM_LOCAL_TIMEOUT_S    seconds `start` waits for the node   (default 60)
#   ROBUSTDIAG_SLURM_INSTALL 1 = install missing packages         (default 0)
set -euo pipefail

DIR="${SLURM_LOCAL_DIR:-/tmp/robustdiag-slurm}"
CTLD_PORT="${SLURM_LOCAL_CTLD_PORT:-16817}"
SLURMD_PORT="${SLURM_LOCAL_SLURMD_PORT:-16818}"
PARTITION="${SLURM_LOCAL_PARTITION:-debug}"
TIMEOUT_S="${SLURM_LOCAL_TIMEOUT_S:-60}"
INSTALL="${ROBUSTDIAG_SLURM_INSTALL:-0}"
NODE="localnode"             # NodeName; slurmd is started with -N so the hostname does not matter
CTLD_HOST="$(hostname -s)"  # slurmctld only runs where SlurmctldHost names this host
CONF="$DIR/etc/slurm.conf"
MUNGE_SOCKET="$DIR/munge/munge.socket.2"
# Debian puts the daemons in /usr/sbin, which a non-login shell may not have on PATH.
export PATH="$PATH:/usr/sbin:/sbin"

die() { echo "local_cluster.sh: error: $*" >&2; exit 1; }
log() { echo "local_cluster.sh: $*" >&2; }

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit "${1:-0}"
}

have_packages() {
    command -v munged >/dev/null && command -v slurmctld >/dev/null \
        && command -v slurmd >/dev/null && command -v sbatch >/dev/null
}

install_packages() {
    [ "$(id -u)" = 0 ] || die "installing slurm-wlm and munge needs root (run: sudo apt-get install -y slurm-wlm munge)"
    log "installing slurm-wlm and munge with apt-get"
    local t0=$SECONDS
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
    log "installed in $((SECONDS - t0)) s"
}

ensure_packages() {
    have_packages && return 0
    if [ "$INSTALL" = 1 ]; then
        install_packages
        have_packages || die "slurm-wlm/munge installed but munged/slurmctld/slurmd/sbatch still not found"
    else
        die "munged, slurmctld, slurmd or sbatch not found. Install them with
    apt-get update && apt-get install -y slurm-wlm munge
or run: $0 --install start   (or ROBUSTDIAG_SLURM_INSTALL=1 $0 start)"
    fi
}

pid_alive() {  # pid_alive <daemon>: its pid file names a live (not zombie) process of that name
    local pid
    pid="$(cat "$DIR/run/$1.pid" 2>/dev/null)" || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] \
        && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}

daemons_alive() {
    pid_alive munged && pid_alive slurmctld && pid_alive slurmd
}

node_state() {  # prints the node state (idle, mix, alloc, down, ...) or nothing
    SLURM_CONF="$CONF" sinfo -h -N -n "$NODE" -o '%t' 2>/dev/null | head -n1 | tr -d '*~#!%$@^-' || true
}

write_munge_key() {
    mkdir -p "$DIR/munge"
    chmod 711 "$DIR/munge"  # clients need to reach the socket; the key itself is 0400
    if [ ! -s "$DIR/munge/munge.key" ]; then
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
        chmod 400 "$DIR/munge/munge.key"
    fi
}

write_conf() {
    # `slurmd -C` prints this machine's NodeName line (CPUs, sockets, cores, threads, RealMemory).
    local hw
    hw="$(slurmd -C 2>/dev/null | grep '^NodeName=' | sed -E 's/^NodeName=[^ ]+ //; s/ UpTime=.*//')"
    [ -n "$hw" ] || die "slurmd -C printed no NodeName line; cannot size the node"
    local cpus mem
    cpus="$(sed -nE 's/.*CPUs=([0-9]+).*/\1/p' <<<"$hw")"
    mem="$(sed -nE 's/.*RealMemory=([0-9]+).*/\1/p' <<<"$hw")"
    # leave some memory to the OS so slurmd does not drain the node for "Low RealMemory"
    mem=$(( mem * 9 / 10 ))
    hw="$(sed -E "s/RealMemory=[0-9]+/RealMemory=$mem/" <<<"$hw")"
    mkdir -p "$DIR/etc" "$DIR/state" "$DIR/spool/slurmd" "$DIR/log" "$DIR/run"
    cat >"$CONF" <<EOF
# Generated by slurm/local_cluster.sh: single node, loopback only, state under $DIR.
ClusterName=robustdiag
SlurmctldHost=$CTLD_HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job may start again after this many seconds (default 120)
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/slurmd
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1024
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
SlurmdTimeout=60
InactiveLimit=0
# seconds between SIGTERM and SIGKILL when a job is cancelled (submitit jobs ignore SIGTERM)
KillWait=5
# finished jobs stay visible to squeue (and the sacct shim) for an hour
MinJobAge=3600
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE $hw State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    log "wrote $CONF (node: $cpus CPUs, $mem MB)"
}

start_munged() {
    pid_alive munged && return 0
    write_munge_key
    # --force: munged refuses to run as root or with a key outside /etc/munge otherwise.
    munged --force \
        --socket="$MUNGE_SOCKET" \
        --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/run/munged.pid" \
        --log-file="$DIR/log/munged.log" \
        --seed-file="$DIR/munge/munged.seed" \
        || die "munged failed to start: $(tail -n 20 "$DIR/log/munged.log" 2>/dev/null)"
}

start_slurm_daemons() {
    pid_alive slurmctld || slurmctld -f "$CONF" \
        || die "slurmctld failed to start: $(tail -n 20 "$DIR/log/slurmctld.log" 2>/dev/null)"
    pid_alive slurmd || slurmd -f "$CONF" -N "$NODE" \
        || die "slurmd failed to start: $(tail -n 20 "$DIR/log/slurmd.log" 2>/dev/null)"
}

wait_for_node() {
    local deadline=$((SECONDS + TIMEOUT_S)) state=""
    while [ $SECONDS -lt $deadline ]; do
        state="$(node_state)"
        case "$state" in
            idle|mix|alloc|comp) return 0 ;;
            down|drain|drng|fail)
                # ReturnToService=2 brings a registered node back; nudge it once in case it was down before.
                SLURM_CONF="$CONF" scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 1
    done
    echo "local_cluster.sh: error: node $NODE did not become idle within ${TIMEOUT_S}s (last state: '${state:-no answer}')" >&2
    for f in munged slurmctld slurmd; do
        echo "---- $DIR/log/$f.log (last 15 lines) ----" >&2
        tail -n 15 "$DIR/log/$f.log" >&2 2>/dev/null || echo "(missing)" >&2
    done
    exit 1
}

cmd_start() {
    ensure_packages
    if daemons_alive && [ -n "$(node_state)" ]; then
        log "already running (state dir $DIR)"
    else
        local t0=$SECONDS
        # Stale pid files or half-started daemons from an earlier run: stop what is ours, then start clean.
        stop_daemons
        mkdir -p "$DIR"
        chmod 755 "$DIR"
        write_conf
        write_sacct_shim
        start_munged
        start_slurm_daemons
        wait_for_node
        log "cluster up in $((SECONDS - t0)) s: partition '$PARTITION', node $NODE"
    fi
    print_exports
}

print_exports() {
    echo "export SLURM_CONF=$CONF"
    echo "export PATH=$DIR/bin:\$PATH"
}

write_sacct_shim() {
    mkdir -p "$DIR/bin"
    cat >"$DIR/bin/sacct" <<'SHIM'
#!/usr/bin/env bash
# sacct for the local test cluster of slurm/local_cluster.sh, which has no accounting database: answers
# `sacct -o FIELDS --parsable2 -j IDS` (what submitit asks) from slurmctld's memory of recent jobs via
# squeue. Fields: JobID, JobName, State, NodeList, Partition, Elapsed. Anything else goes to the real sacct.
fields="JobID,JobName,State,NodeList"; jobs=""; header=1; parsable=0
args=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        -o|--format) fields="$2"; shift ;;
        --format=*) fields="${1#*=}" ;;
        -j|--jobs) jobs="${jobs:+$jobs,}$2"; shift ;;
        --jobs=*) jobs="${jobs:+$jobs,}${1#*=}" ;;
        -P|--parsable2) parsable=1 ;;
        -n|--noheader) header=0 ;;
        *) exec /usr/bin/sacct "${args[@]}" ;;
    esac
    shift
done
[ "$parsable" = 1 ] || exec /usr/bin/sacct "${args[@]}"
fmt=""
IFS=, read -ra names <<<"$fields"
for f in "${names[@]}"; do
    case "${f,,}" in
        jobid) c=%i ;; jobname) c=%j ;; state) c=%T ;; nodelist) c=%N ;; partition) c=%P ;; elapsed) c=%M ;;
        *) exec /usr/bin/sacct "${args[@]}" ;;
    esac
    fmt="${fmt:+$fmt|}$c"
done
if [ "$header" = 1 ]; then (IFS='|'; echo "${names[*]}"); fi
squeue --states=all --array --noheader --format="$fmt" 2>/dev/null | awk -F'|' -v want="$jobs" '
    BEGIN { n = split(want, w, ","); for (i = 1; i <= n; i++) keep[w[i]] = 1 }
    { id = $1; base = id; sub(/_.*/, "", base); if (n == 0 || (id in keep) || (base in keep)) print }'
SHIM
    chmod 755 "$DIR/bin/sacct"
}

stop_pidfile() {  # stop_pidfile <daemon>: TERM, wait up to 10 s, then KILL (only if the pid is that daemon)
    local f="$DIR/run/$1.pid" pid i
    [ -s "$f" ] || return 0
    pid="$(cat "$f")"
    if pid_alive "$1"; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 50); do
            pid_alive "$1" || break
            sleep 0.2
        done
        if pid_alive "$1"; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
    rm -f "$f"
}

stop_daemons() {
    [ -d "$DIR/run" ] || return 0
    # Cancel running jobs first so their processes do not outlive slurmd.
    if pid_alive slurmctld; then
        SLURM_CONF="$CONF" scancel --full --quiet --partition="$PARTITION" 2>/dev/null || true
    fi
    stop_pidfile slurmd
    stop_pidfile slurmctld
    stop_pidfile munged
}

cmd_stop() {
    stop_daemons
    # Only ever delete a directory this script created (it holds the generated slurm.conf).
    if [ -f "$CONF" ] && grep -q 'Generated by slurm/local_cluster.sh' "$CONF"; then
        rm -rf "$DIR"
    fi
    log "stopped"
}

cmd_status() {
    local d
    for d in munged slurmctld slurmd; do
        if pid_alive "$d"; then echo "$d: running (pid $(cat "$DIR/run/$d.pid"))"
        else echo "$d: not running"; fi
    done
    if daemons_alive; then
        print_exports
        SLURM_CONF="$CONF" sinfo || true
        SLURM_CONF="$CONF" squeue || true
    else
        return 1
    fi
}

main() {
    local cmd=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --install) INSTALL=1 ;;
            -h|--help) usage 0 ;;
            start|stop|status) cmd="$1" ;;
            *) echo "local_cluster.sh: unknown argument '$1' (valid: start, stop, status, --install)" >&2; usage 2 ;;
        esac
        shift
    done
    case "$cmd" in
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        *) usage 2 ;;
    esac
}

main "$@"
