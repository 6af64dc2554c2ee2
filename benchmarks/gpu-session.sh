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
# What is left for a GPU (2026-12-08): fig4-right's {1,2,3} runs (about 10 minutes), the referee grid (50 runs at
# the paper's protocol; the CPU trains them in order), and the size of augmented-cnn: `SIZING=1 SWEEPS=` first.
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
SWEEPS="${SWEEPS-fig4-right referee}"  # issue 30: Fig 4 right's {1,2,3} runs, then the referee grid (fig5 is done)
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
# SIZING=1 (issue 29): plain SGD under augmented-cnn's recipe at the sizes a CPU cannot afford, all side by side,
# before that spec's size is fixed: does the net fit its training set and leave a gap? -> $OUT/sizing.txt
if [ -n "${SIZING:-}" ]; then
  for model in ${SIZING_MODELS:-cnn-bn cnn-bn-32}; do
    for n in ${SIZING_SUBSETS:-5000 10000}; do
      timeout $((BUDGET / 2)) python3 -m pleat.cli train --dataset fashion-mnist --model "$model" --kind none \
        --lr 0.05 --schedule cosine --momentum 0.9 --weight-decay 5e-4 --augment true --batch-size 128 \
        --epochs "${SIZING_EPOCHS:-200}" --train-subset "$n" --seed 0 --device "$DEVICE" --progress false \
        --out-dir "$OUT/sizing" >"$OUT/sizing-$model-$n.log" 2>&1 &
    done
  done
  wait
  python3 - "$OUT/sizing" <<'PY' | tee "$OUT/sizing.txt"
import glob, json, sys
for path in sorted(glob.glob(sys.argv[1] + "/*/config.json")):
    config = json.load(open(path))
    records = [json.loads(line)["record"] for line in open(path.replace("config.json", "metrics.jsonl"))]
    print(config["model"], config["train_subset"], "images, epoch: train accuracy (augmented batches), train loss, test")
    for r in records[9::10] + records[-1:]:
        print(f"  {r['epoch']:4d}: {r['train_accuracy']:.4f} {r['train_loss']:.4f} {r['test_accuracy']:.4f}")
PY
  tail -n 2 "$OUT"/sizing-*.log >>"$OUT/sizing.txt"  # a run that failed says why here
  rm -rf "$OUT/sizing" "$OUT"/sizing-*.log
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
