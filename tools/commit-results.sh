#!/usr/bin/env bash
# Stage a sweep's finished runs and rebuild its report, for committing by hand:
#   tools/commit-results.sh SWEEP_FOLDER [SPEC]
# SPEC (a spec name or file) is the sweep's own spec: it is copied over SWEEP_FOLDER/spec.toml (a sweep run from a
# temporary spec leaves that one there), and the runs it `reuse`s from other sweeps are imported first. Only run
# folders holding result.json are staged: a run still training stays out of git.
set -euo pipefail
out=${1:?usage: tools/commit-results.sh SWEEP_FOLDER [SPEC]}
spec=${2:-}
if [ -n "$spec" ]; then
  python - "$out" "$spec" <<'PY'
import json, shutil, sys
from pathlib import Path
from pleat.reproduce.spec import expand, load_spec
from pleat.reproduce.sweep import take_finished
out, spec = Path(sys.argv[1]), load_spec(sys.argv[2])
budget = json.loads((out / "sweep.json").read_text())["budget"]
shutil.copyfile(spec.source, out / "spec.toml")
n = take_finished(spec, budget, expand(spec, budget, None, out_dir=str(out / "runs")), out)
print(f"imported {n} finished runs from {', '.join(spec.reuse) or 'no other sweep'}")
PY
fi
for run in "$out"/runs/*/; do
  [ -f "$run/result.json" ] || continue
  for f in config.json environment.json metrics.jsonl result.json state.json; do
    [ -f "$run/$f" ] && git add -f "$run/$f"
  done
done
pleat report "$out" >/dev/null
for f in "$out"/report.html "$out"/*.png "$out"/spec.toml "$out"/sweep.json; do
  [ -f "$f" ] && git add -f "$f"
done
git status --short "$out" | grep -v '^??' | wc -l | xargs echo "staged files under $out:"
tools/docs-results.sh >/dev/null  # the documentation's results pages follow the staged runs
git add -A docs/results
