#!/usr/bin/env bash
# The learner-speed device check, one run on a CUDA machine (no pip install, no internet):
#   bash experiments/learner_speed/gpu_check.sh            # OUT=./out by default
# from the repository root. It writes into $OUT:
#   nvidia_smi.txt    nvidia-smi before the runs
#   checks.txt        torch/CUDA versions, the solver/tuning import check, the CPU/CUDA agreement tests (pytest)
#   bench_gpu.json    {"learner": [rows of every size]} of `hffm-opt bench --learner --torch-device cuda`
#   bench_gpu.log     the benches' stderr (and any error of a size)
#   profile_gpu.md    where a global round at 10,000 devices spends its GPU time (torch.profiler), if time allows
# One process per size (a failing size keeps the others); a size above 40,000 that fails (e.g. out of time or
# memory) is followed by 40,000 devices (400 edge servers x 100).
# Overrides (to test it on a CPU): LEARNER_SIZES (default 1000,10000,100000), LEARNER_DEVICE (default cuda).
# Sizes above 1,000 devices use the synthetic benchmark (easy-VQA is not installed there and is too small).
set -u
cd "$(dirname "$0")/../.." || exit 1
OUT="${OUT:-./out}"
SIZES="${LEARNER_SIZES:-1000,10000,100000}"
DEVICE="${LEARNER_DEVICE:-cuda}"
mkdir -p "$OUT/parts"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export HFFM_OPT_CACHE="${HFFM_OPT_CACHE:-${TMPDIR:-/tmp}/hffm_opt_cache}"  # pre-trained models, outside $OUT
start=$(date +%s)

{ nvidia-smi || echo "nvidia-smi: not available"; } > "$OUT/nvidia_smi.txt" 2>&1

{
  echo "== environment"
  python3 -c "import torch, sys; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda',
torch.version.cuda, '| available', torch.cuda.is_available(), '|', torch.cuda.get_device_name(0)
if torch.cuda.is_available() else 'no GPU')"
  echo "== imports (learners, schedulers, the bench must not import the solver or tuning stack)"
  python3 - <<'PY'
import sys
import hffm_opt.analysis.learner_bench, hffm_opt.learners, hffm_opt.schedulers  # noqa: E401,F401
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"cvxpy", "pyomo", "optuna", "highspy", "sqlalchemy"})
print("solver/tuning packages imported:", heavy or "none")
PY
  echo "== CPU/CUDA agreement tests"
  timeout 120 python3 -m pytest -q -rs -p no:cacheprovider tests/learners/test_device.py tests/learners/test_layers.py
  echo "pytest exit code: $?"
} > "$OUT/checks.txt" 2>&1

: > "$OUT/bench_gpu.log"
for n in ${SIZES//,/ }; do
  limit=100; [ "$n" -gt 1000 ] && limit=130; [ "$n" -gt 10000 ] && limit=300
  echo "== $n devices on $DEVICE (limit ${limit} s), $(($(date +%s) - start)) s since start" >> "$OUT/bench_gpu.log"
  timeout "$limit" python3 -m hffm_opt.cli bench --learner --torch-device "$DEVICE" --sizes "$n" --json \
    > "$OUT/parts/bench_$n.json" 2>> "$OUT/bench_gpu.log"
  code=$?
  echo "exit code: $code" >> "$OUT/bench_gpu.log"
  # a large size that fails falls back to 40,000 devices while time is left
  if [ "$code" -ne 0 ] && [ "$n" -gt 40000 ] && [ "$DEVICE" != cpu ] && [ $(($(date +%s) - start)) -lt 330 ]; then
    echo "== fallback: 40000 devices (400 edge servers x 100)" >> "$OUT/bench_gpu.log"
    timeout 150 python3 -m hffm_opt.cli bench --learner --torch-device "$DEVICE" --sizes 40000 --json \
      > "$OUT/parts/bench_40000.json" 2>> "$OUT/bench_gpu.log"
    echo "exit code: $?" >> "$OUT/bench_gpu.log"
  fi
done

if [ "$DEVICE" != "cpu" ] && [ $(($(date +%s) - start)) -lt 420 ]; then
  echo "== profile, 10000 devices" >> "$OUT/bench_gpu.log"
  timeout 90 python3 experiments/learner_speed/profile_round.py 10000 --device "$DEVICE" \
    > "$OUT/profile_gpu.md" 2>> "$OUT/bench_gpu.log"
  echo "exit code: $?" >> "$OUT/bench_gpu.log"
fi

python3 - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
rows = []
for part in sorted((out / "parts").glob("bench_*.json"), key=lambda p: int(p.stem.split("_")[1])):
    try:
        rows += json.loads(part.read_text())["learner"]
    except (ValueError, KeyError):
        rows.append({"n_devices": int(part.stem.split("_")[1]), "error": "no result, see bench_gpu.log"})
(out / "bench_gpu.json").write_text(json.dumps({"learner": rows}, indent=1))
for part in (out / "parts").glob("bench_*.json"):  # merged: keep $OUT to a few files
    part.unlink()
(out / "parts").rmdir()
for r in rows:
    print(r)
PY
echo "total $(($(date +%s) - start)) s" >> "$OUT/bench_gpu.log"
