#!/usr/bin/env bash
# One prepared GPU check: on a machine with CUDA, run the GPU-marked tests and every benchmark in a short
# mode, write their JSON under one folder, and print a one-screen summary (each ratio against its GPU
# target). Budget: <= 8 minutes on one H100/H200-class GPU. On a machine without CUDA it says so and exits 0.
#
#   bash benchmarks/gpu_check.sh                  # writes results/benchmarks/gpu/
#   OUT=/tmp/gpu bash benchmarks/gpu_check.sh     # elsewhere
#
# Uses the project's own environment (.venv, made by `make setup`); it never installs anything, so it also
# runs on a machine without network when .venv was carried there.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/benchmarks/gpu}
PY=${PYTHON:-.venv/bin/python}
if [ ! -x "$PY" ]; then
  echo "gpu_check: no $PY; run 'make setup' first (or set PYTHON=/path/to/python with robustdiag installed)" >&2
  exit 2
fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  "$PY" -c 'import torch; print(f"gpu_check: no CUDA GPU here (torch {torch.__version__}, CUDA build {torch.version.cuda}); nothing to check, exiting cleanly")'
  exit 0
fi
mkdir -p "$OUT"
"$PY" - "$OUT" <<'PYEOF'
import json, sys, torch
json.dump({"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda},
          open(f"{sys.argv[1]}/machine.json", "w"), indent=2)
PYEOF
status=0
step() {  # step <name> <seconds> <command...>: run with a time limit, log, keep going on failure
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s)"
  local start=$SECONDS
  if timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; then
    echo "   ok in $((SECONDS - start))s"
  else
    echo "   FAILED or timed out after $((SECONDS - start))s: see $OUT/$name.log"; tail -5 "$OUT/$name.log"; status=1
  fi
}
export ROBUSTDIAG_PROGRESS=0
step gpu_tests 90 "$PY" -m pytest -q -m gpu -p no:cacheprovider --junitxml="$OUT/gpu_tests.xml"
step bench_fisher 75 "$PY" benchmarks/bench_fisher.py --device cuda --batch-size 64 --repeats 3 --skip-bounds --out "$OUT/bench_fisher.json"
step bench_paths 60 "$PY" benchmarks/bench_paths.py --device cuda --quick --out "$OUT/bench_paths.json"
step bench_attack 60 "$PY" benchmarks/bench_attack.py --device cuda --batch-size 256 --repeats 5 --out "$OUT/bench_attack.json"
step bench_shifts 75 "$PY" benchmarks/bench_shifts.py --device cuda --batch-size 512 --reference-images 16 --repeats 3 --round-seconds 0.1 --out "$OUT/bench_shifts.json"
step bench_shifts_224 75 "$PY" benchmarks/bench_shifts.py --device cuda --image-size 224 --batch-size 64 --reference-images 2 --repeats 2 --round-seconds 0.1 --out "$OUT/bench_shifts_224.json"
step bench_train 45 "$PY" benchmarks/bench_train.py --device cuda --repeats 2 --out "$OUT/bench_train.json"
echo
"$PY" benchmarks/summary.py "$OUT" --gpu || status=1
exit $status
