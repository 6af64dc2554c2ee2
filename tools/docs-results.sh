#!/usr/bin/env bash
# Write the documentation's results pages (docs/results/) from the runs git tracks in results/: a sweep in progress
# has finished runs not yet committed, and the pages must be what a clean clone's runs say
# (tests/test_docs.py fails when they are not).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git ls-files -z results | xargs -0 cp --parents -t "$tmp"
rm -rf docs/results
root=$PWD
(cd "$tmp" && python -m pleat.cli report results --markdown "$root/docs/results")
