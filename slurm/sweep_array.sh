#!/usr/bin/env bash
# Submit a sweep as a plain Slurm job array and return at once (the submitit launcher instead keeps
# the launching shell busy until every job has ended).
#
#   slurm/sweep_array.sh [options] <experiment> [overrides...]
#   slurm/sweep_array.sh [options] [overrides...]            # no experiment preset
#
#   slurm/sweep_array.sh quickstart
#   RD_SBATCH_ARGS="--partition=gpu --gpus=1 --cpus-per-task=8 --mem=32G --time=12:00:00" \
#       slurm/sweep_array.sh --parallel 16 <sweep> model=resnet18,vgg11_bn seed=0,1,2
#   slurm/sweep_array.sh --sweep-dir multirun/2026-05-01/12-00-00-3fa9c1 <sweep>   # fill in missing points
#
# The grid (hydra.sweeper.params of the config + sweeps on the command line, exactly as `robustdiag -m`
# would run it, checked against launch.max_jobs) is written to <sweep dir>/grid.txt, one line of
# overrides per grid point; task i of the array runs line i+1 with hydra.run.dir=<sweep dir>/<i>
# (slurm/array_job.sbatch). Only points without a complete record are submitted, so rerunning this with
# --sweep-dir of an existing sweep fills in what is missing. Then: robustdiag-analyze <sweep dir>.
#
# Options:
#   --sweep-dir DIR   sweep directory (default: the config's hydra.sweep.dir, unique per launch)
#   --parallel P      array tasks running at once (default 32; sbatch --array=...%P)
#   --dry-run         write the grid and print the sbatch command without submitting
# Environment:
#   RD_SBATCH_ARGS    extra sbatch options (partition, GPUs, CPUs, memory, time), word-split
#   SBATCH_*          sbatch's own input variables (SBATCH_PARTITION, SBATCH_TIMELIMIT, ...) also apply
#   RD_MAX_REQUEUE    requeues of a task that reaches its time limit (default 3)
#   ROBUSTDIAG_CMD    command that runs one grid point (default: robustdiag on PATH, else <repo>/.venv/bin/robustdiag)
#   ROBUSTDIAG_PYTHON python with robustdiag installed (default: the one next to robustdiag)
#   ROBUSTDIAG_CONFIG_DIR  Hydra config dir (default: the repo's src/robustdiag/conf/)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
die() { echo "sweep_array.sh: error: $*" >&2; exit 1; }

sweep_dir="auto"
parallel=32
dry_run=0
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --sweep-dir) sweep_dir="${2:?--sweep-dir needs a directory}"; shift ;;
        --sweep-dir=*) sweep_dir="${1#*=}" ;;
        --parallel) parallel="${2:?--parallel needs a number}"; shift ;;
        --parallel=*) parallel="${1#*=}" ;;
        --dry-run) dry_run=1 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        --) shift; args+=("$@"); break ;;
        -*) die "unknown option '$1' (valid: --sweep-dir DIR, --parallel P, --dry-run; sbatch options go in RD_SBATCH_ARGS)" ;;
        *) args+=("$1") ;;
    esac
    shift
done
[[ "$parallel" =~ ^[1-9][0-9]*$ ]] || die "--parallel must be a positive integer, got '$parallel'"
experiment=""
if [ ${#args[@]} -gt 0 ] && [[ "${args[0]}" != *=* ]]; then
    experiment="${args[0]}"
    args=("experiment=$experiment" "${args[@]:1}")
fi
[ ${#args[@]} -gt 0 ] || die "nothing to sweep: give an experiment and/or overrides (see --help)"

if [ -z "${ROBUSTDIAG_CMD:-}" ]; then
    bin="$(command -v robustdiag || true)"
    [ -n "$bin" ] || bin="$REPO/.venv/bin/robustdiag"
    [ -x "$bin" ] || die "robustdiag not found on PATH nor at $bin; activate its environment or set ROBUSTDIAG_CMD"
    ROBUSTDIAG_CMD="$bin"
fi
python="${ROBUSTDIAG_PYTHON:-$(dirname "$(command -v "${ROBUSTDIAG_CMD%% *}")")/python}"
[ -x "$python" ] || python="$(command -v python3)"
command -v sbatch >/dev/null || [ "$dry_run" = 1 ] \
    || die "sbatch not found: install the Slurm client tools or load your cluster's Slurm module"

sweep_dir="$("$python" -m robustdiag.launch expand --sweep-dir "$sweep_dir" "${args[@]}")"
n_points="$(grep -c . "$sweep_dir/grid.txt")"
pending="$("$python" -m robustdiag.launch pending "$sweep_dir")"
if [ -z "$pending" ]; then
    echo "sweep_array.sh: all $n_points grid points in $sweep_dir are complete; nothing to submit"
    echo "$sweep_dir"
    exit 0
fi
if command -v scontrol >/dev/null; then
    max_array="$(scontrol show config 2>/dev/null | sed -nE 's/^MaxArraySize *= *([0-9]+).*/\1/p')"
    if [ -n "$max_array" ] && [ "$n_points" -gt "$max_array" ]; then
        die "the grid has $n_points points but this cluster's MaxArraySize is $max_array: split the sweep (e.g. one experiment per seed) or use hydra/launcher=slurm"
    fi
fi

mkdir -p "$sweep_dir/.slurm"
export RD_SWEEP_DIR="$sweep_dir" RD_CMD="$ROBUSTDIAG_CMD" RD_MAX_REQUEUE="${RD_MAX_REQUEUE:-3}"
# shellcheck disable=SC2206  # RD_SBATCH_ARGS is a list of options, split on whitespace on purpose
cmd=(sbatch --parsable --array="${pending}%${parallel}" --job-name="rd-${experiment:-sweep}"
     --output="$sweep_dir/.slurm/%A_%a.out" ${RD_SBATCH_ARGS:-} "$REPO/slurm/array_job.sbatch")
if [ "$dry_run" = 1 ]; then
    echo "sweep_array.sh: dry run: ${cmd[*]}" >&2
    echo "$sweep_dir"
    exit 0
fi
job_id="$("${cmd[@]}")"
echo "sweep_array.sh: submitted job array $job_id; logs in $sweep_dir/.slurm/, results in $sweep_dir/<i>/" >&2
echo "sweep_array.sh: when it is done: robustdiag-analyze $sweep_dir" >&2
echo "$sweep_dir"
