#!/usr/bin/env bash
# What a session lent a GPU runs, as one command within the device tool's 10-minute limit (15 minutes of device
# time a session, all calls together). From the repository root, on this machine:
#   mkdir -p data && cp -r ../shared/datasets/FashionMNIST data/      # /data/ is git-ignored; about 30 MB
#   device run: command "bash benchmarks/gpu-session.sh", carry ["data"], timeout_s 590
# It writes into $OUT (at most 8 files come back): gpu.txt (the card), gpu-tests.txt, objective.txt, group.txt,
# $SWEEP-decisive.txt (the sweep's log: runs finished, their accuracies) and $SWEEP-decisive.tar.gz (the sweep's
# store without checkpoints: unpack it into results/ and the next session, GPU or CPU, continues it). The decisive
# budget (the paper's protocol on the settings the claims need) of Fig 4 right is what the CPU can least finish:
# 10.7 h on 2 cores (fig3's decisive sweep is complete; set SWEEP=fig5 or fig4-left for the others).
# The GPU machine reaches no network: pleat runs from src/ with the packages it finds there.
set -uo pipefail
export PLEAT_DATA="${PLEAT_DATA:-$PWD/data}" PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-/tmp/pleat-gpu-session}"
DEVICE="${DEVICE:-cuda}"
SWEEP_SECONDS="${SWEEP_SECONDS:-300}"
SWEEP="${SWEEP:-fig4-right}"
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1; date -u; python --version;
  python -c "import torch; print('torch', torch.__version__)"
  for m in numpy scipy pandas matplotlib kornia tqdm pytest pytorch_optimizer; do
    python -c "import $m" 2>/dev/null && echo "has $m" || echo "MISSING $m"
  done; } | tee "$OUT/gpu.txt"
# -o addopts="": without the default -n auto, which needs pytest-xdist (the GPU machine may lack it)
timeout 120 python -m pytest -o addopts="" -m gpu -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/gpu-tests.txt"
timeout 90 python benchmarks/objective.py --device "$DEVICE" --no-memory --quick 2>&1 | tee "$OUT/objective.txt"
timeout 30 python benchmarks/kernels.py --device "$DEVICE" 2>&1 | tee "$OUT/kernels.txt"
{ timeout 120 python benchmarks/sweep.py group --device "$DEVICE"
  timeout 120 python benchmarks/sweep.py compile --device "$DEVICE"; } 2>&1 | tee "$OUT/group.txt"
# a decisive sweep, as far as it gets; a later run of this script (or a CPU session) resumes it
timeout "$SWEEP_SECONDS" python -m pleat.cli reproduce "$SWEEP" --budget decisive --device "$DEVICE" \
  --workers 1 --out "results/$SWEEP-decisive" 2>&1 | tee "$OUT/$SWEEP-decisive.txt"
tar czf "$OUT/$SWEEP-decisive.tar.gz" --exclude='checkpoint-*.pt' --exclude=lock "results/$SWEEP-decisive"
ls -la "$OUT"
