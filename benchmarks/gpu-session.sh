#!/usr/bin/env bash
# What a session lent a GPU runs, as one command within the device tool's 10-minute limit (15 minutes of device
# time a session, all calls together, the machine's start included). From the repository root, on this machine:
#   mkdir -p data && cp -r ../shared/datasets/{MNIST,FashionMNIST} data/   # /data/ is git-ignored; about 42 MB
#   device run: command "bash benchmarks/gpu-session.sh", carry ["data"], timeout_s 590
# then, if device time is left and the machine is still warm (30 s), at once: first unpack the first call's
# tarballs into results/ here (the next call's copy of the tree replaces the machine's untracked run files with
# this checkout's, so runs this checkout lacks are lost there; 2026-12-04 lost 4 nearly finished runs so), then
#   device run: command "SKIP_CHECKS=1 BUDGET=150 bash benchmarks/gpu-session.sh", carry ["data"], timeout_s 170
# which resumes the sweeps from the checkpoints the first call left on that machine (git-ignored files stay).
# What is left for a GPU (2026-12-04): fig4-right's {1,2,3} runs (about 10 minutes) and the label-noise sweep
# (fc2, 10,000 images: about 1 s an epoch a run while 16 share the card): SWEEPS="fig4-right label-noise".
# It writes into $OUT (at most 8 files come back): gpu.txt (the card), gpu-tests.txt, objective.txt, and per sweep
# of $SWEEPS its log ($S-decisive.txt) and its store without checkpoints ($S-decisive.tar.gz: unpack it into
# results/; finished runs count, unfinished ones are retrained). The sweeps run side by side, each group of runs in
# its own process: the paper's nets are too small to fill the card, so one process leaves it mostly idle.
# The GPU machine reaches no network: pleat runs from src/ with the packages it finds there.
set -uo pipefail
export PLEAT_DATA="${PLEAT_DATA:-$PWD/data}" PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-/tmp/pleat-gpu-session}"
DEVICE="${DEVICE:-cuda}"
BUDGET="${BUDGET:-570}"  # seconds this whole command may take
SWEEPS="${SWEEPS:-fig5 fig4-right}"  # issue 30: Figs 5 and 4 right at the decisive budget run on a GPU first
WORKERS="${WORKERS:-4}"  # processes per sweep (fig4-right's decisive budget packs into 4 groups, fig5's into 1)
START=$(date +%s)
mkdir -p "$OUT"
if [ -z "${SKIP_CHECKS:-}" ]; then
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1; date -u; python3 --version
    python3 -c "import torch; print('torch', torch.__version__)"
    for m in numpy scipy pandas matplotlib kornia tqdm pytest pytorch_optimizer; do
      python3 -c "import $m" 2>/dev/null && echo "has $m" || echo "MISSING $m"
    done; } | tee "$OUT/gpu.txt"
  # -o addopts="": without the default -n auto, which needs pytest-xdist (the GPU machine may lack it)
  timeout 100 python3 -m pytest -o addopts="" -m gpu -q -p no:cacheprovider tests/runs/test_gpu.py 2>&1 | tee "$OUT/gpu-tests.txt"
  timeout 80 python3 benchmarks/objective.py --device "$DEVICE" --no-memory --quick 2>&1 | tee "$OUT/objective.txt"
fi
# the decisive sweeps, side by side, as far as they get; a later call (or session) resumes them
left=$((BUDGET - ($(date +%s) - START) - 20))
for s in $SWEEPS; do
  timeout "$left" python3 -m pleat.cli reproduce "$s" --budget decisive --device "$DEVICE" --workers "$WORKERS" \
    --out "results/$s-decisive" >"$OUT/$s-decisive.txt" 2>&1 &
done
wait
for s in $SWEEPS; do
  tail -n 30 "$OUT/$s-decisive.txt"
  tar czf "$OUT/$s-decisive.tar.gz" --exclude='checkpoint-*.pt' --exclude=lock "results/$s-decisive"
done
ls -la "$OUT"
