#!/bin/sh
# test.sh runs the trainer's tests on the CPU with Debian's python3-torch
# (installed where missing): the Python unit tests, then a tiny model
# trained for a few steps, exported through the Go exporter and checked
# against wick's CPU backend (internal/trainparity on a fresh fixture).
#
#	sh train/test.sh        (from the repository root; `make train-test`)
set -eu
cd "$(dirname "$0")/.."
scripts/install-deps.sh python3-torch python3-numpy
py=/usr/bin/python3
go=${GO:-go}
"$py" -m unittest discover -s train/tests -t train/tests
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" -c "import sys; sys.path.insert(0, 'train/tests'); import test_train; test_train.synthetic_data('$tmp', 384)"
"$py" train/train.py -data "$tmp" -config tiny -steps 3 -batch 4 -eval-every 1e9 -out "$tmp/export" -name tiny >/dev/null
$go run ./train/export -in "$tmp/export" -tokenizer testdata/tokenizer/tokenizer.model -out "$tmp/model"
"$py" train/fixture.py -export "$tmp/export" -data "$tmp" -model "$tmp/model" -out "$tmp/fixture" -n 60
WICK_PARITY_FIXTURE="$tmp/fixture" $go test -count=1 ./internal/trainparity/
