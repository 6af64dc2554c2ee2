#!/usr/bin/env bash
# A frozen checkout of HEAD for a long background sweep, so that edits to the working tree cannot change the code
# it runs while each run's environment.json still names the commit (a `git archive` copy has no commit to name):
#   tools/freeze.sh [DIR]        (default /tmp/pleat-frozen), then: PYTHONPATH=DIR/src pleat reproduce ...
set -euo pipefail
dir=${1:-/tmp/pleat-frozen}
git worktree remove --force "$dir" 2>/dev/null || rm -rf "$dir"
git worktree prune
git worktree add --detach --quiet "$dir" HEAD
echo "$dir holds $(git -C "$dir" rev-parse --short HEAD): run sweeps with PYTHONPATH=$dir/src"
