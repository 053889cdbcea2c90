#!/bin/sh
# device-pagepp.sh: the page path's prefill beside package bench's
# 512-token step on a GPU machine (the H200), from the repository root, for
# issue 12's page-prefill gap (the page read pp512 of the 1B shape at ~4.5k
# tok/s in one 512-token step, package bench ~12k). Each page run is the
# Node host's bench (the page's driver, module and sessions): pp512 in one
# step (-chunk 512), medians of 7 runs with the fastest and slowest, and the
# median run's phases (Go in the module, JS in the GPU imports, awaiting the
# GPU, each wait with its readbacks). Old beside new: $BASE holds the build
# before this branch (its node/, web/ with its wick.wasm; skipped when
# absent); with the prefix cache off (-cache-bytes=-1: no snapshots); then
# package bench's 512-token step in the module on Dawn, and native `wick
# bench`'s GEMV pick by decode speed. It needs web/wick.wasm (make wasm),
# $WICK (default .devbin/wick) and node/node_modules (dawn.node). Results go
# to $OUT, one file per step, summary.txt with each step's status, and a
# short table last (table.txt).
set -u
OUT=${OUT:?set OUT to the results folder}
WICK=${WICK:-.devbin/wick}
BASE=${BASE:-.devbase}
. "$(dirname "$0")/device-step.sh"
page="-model /tmp/m1b -decode 8 -prompt 512 -chunk 512"
step write-1b timeout 90 "$WICK" bench -write-shape 1b /tmp/m1b
step new-page timeout 60 node node/host.mjs bench $page -runs 7 -json "$OUT/new-page.json"
step new-page-nocache timeout 60 node node/host.mjs bench $page -runs 7 -cache-bytes=-1 -json "$OUT/new-page-nocache.json"
if [ -f "$BASE/node/host.mjs" ]; then
	step old-page timeout 60 node "$BASE/node/host.mjs" bench $page -json "$OUT/old-page.json"
	step new-page-again timeout 60 node node/host.mjs bench $page -runs 7 -json "$OUT/new-page-again.json"
fi
# Package bench's 512-token step (webgpu.Sequence.Forward on one sequence,
# medians of 5), the same kernels on the same Dawn, inside the module, and
# the same step on a new sequence each run (the table's last column): does
# a step on buffers WebGPU has just made (the page's bench opens a session
# per run) account for the gap? (The model directory must hold a 512-token
# prompt: cai-tiny's context does not.)
step kernels-1b timeout 150 node node/host.mjs bench -model /tmp/m1b -decode 16 -prompt 512 -chunk 512 -runs 3 -kernels -shapes 1b -mib 64
# Native: which GEMV variant the models run (picked by decode speed now).
step native-1b timeout 90 "$WICK" bench -model "" -shapes 1b -mib 64 -decode 64 -prompt 16 -long 0
{
	cat "$OUT/summary.txt"
	echo
	echo "page pp512, 1B, one 512-token step (median tok/s, fastest-slowest):"
	for f in old-page new-page new-page-again new-page-nocache; do
		[ -f "$OUT/$f.txt" ] && grep -m1 '^prefill pp512' "$OUT/$f.txt" | sed "s/^/$f: /"
	done
	echo
	for f in new-page new-page-nocache; do
		[ -f "$OUT/$f.txt" ] && { echo "$f phases (ms):"; grep -A3 'by phase' "$OUT/$f.txt" | tail -1; grep -m1 '^waits' "$OUT/$f.txt"; }
	done
	echo
	echo "package bench in the module (pp512 on one sequence, then on a new one each run: the last two columns):"
	grep 'gemma-3-1b' "$OUT/kernels-1b.txt" 2>/dev/null
	grep -m1 '^prefill pp512' "$OUT/kernels-1b.txt" 2>/dev/null | sed 's/^/page path in the same process: /'
	echo
	echo "native GEMV pick:"
	grep -i -A12 'GEMV pick\|models run with' "$OUT/native-1b.txt" 2>/dev/null | head -16
} >"$OUT/table.txt" 2>&1
cat "$OUT/table.txt"
