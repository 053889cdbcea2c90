#!/bin/sh
# device-ttft.sh: the page path's time to the first token of a 512-token
# prompt (the 1B shape, one 512-token step) on a GPU machine (the H200),
# from the repository root, this branch's build beside the baseline's, for
# issue 12's page-prefill gap (page pp512 ~9.9k tok/s, 51.9 ms to the first
# token, where package bench's 512-token step in the same module reads
# ~15k). Each page run is the Node host's bench (the page's driver, module
# and sessions, the prefix cache on): -runs 7, the median with the fastest
# and slowest, and the median run's phases (Go in the module, JS in the
# GPU imports, awaiting the GPU, each wait before the first token with its
# readbacks). New and old alternate (new, old, new, old) so that the
# card's drift falls on both. $BASE holds the baseline build: its node/ and
# web/, and its module as $BASE/wick.wasm.xz (unpacked into $BASE/web when
# that has none); skipped when absent. Then package bench's 512-token step
# in the module on Dawn (the reference: the same kernels without the page's
# sessions). It needs web/wick.wasm (make wasm), $WICK (default
# .devbin/wick) and node/node_modules (dawn.node). Results go to $OUT, one
# file per step, summary.txt with each step's status, and a short table
# last (table.txt).
set -u
OUT=${OUT:?set OUT to the results folder}
WICK=${WICK:-.devbin/wick}
BASE=${BASE:-.devbase}
. "$(dirname "$0")/device-step.sh"
page="-model /tmp/m1b -decode 8 -prompt 512 -chunk 512 -runs 7"
step write-1b timeout 90 "$WICK" bench -write-shape 1b /tmp/m1b
old=0
if [ -f "$BASE/node/host.mjs" ]; then
	if [ ! -f "$BASE/web/wick.wasm" ] && [ -f "$BASE/wick.wasm.xz" ]; then
		xz -dc "$BASE/wick.wasm.xz" >"$BASE/web/wick.wasm"
	fi
	[ -e "$BASE/node/node_modules" ] || ln -s "$PWD/node/node_modules" "$BASE/node/node_modules"
	[ -f "$BASE/web/wick.wasm" ] && old=1
fi
for round in 1 2; do
	step new-page-$round timeout 60 node node/host.mjs bench $page -json "$OUT/new-page-$round.json"
	if [ $old = 1 ]; then
		step old-page-$round timeout 60 node "$BASE/node/host.mjs" bench $page -json "$OUT/old-page-$round.json"
	fi
done
# The same on this build with the token drawn as the page draws it by
# default (temperature 0.8, top-p 0.95, on the host from the logits):
# the page's own time to the first token, beside the greedy one above.
step new-page-sampled timeout 60 node node/host.mjs bench $page -page-sampling -json "$OUT/new-page-sampled.json"
# The host's costs alone, on this machine's CPU: the same bench on a WebGPU
# that does no work (host.mjs -null-gpu), this branch's module beside the
# baseline's (this branch's host runs both: the baseline's has no
# -null-gpu). The phases are then the Go, JS and copying the page's path
# puts before its first token, with nothing of the GPU's.
step null-new timeout 60 node node/host.mjs bench -null-gpu $page -json "$OUT/null-new.json"
if [ $old = 1 ]; then
	step null-old timeout 60 node node/host.mjs bench -null-gpu $page -wasm "$BASE/web/wick.wasm" -json "$OUT/null-old.json"
fi
# Package bench's 512-token step (webgpu.Sequence.Forward on one sequence,
# and on a new sequence each run: the last two columns) in the module on
# Dawn: the GPU's work for the step without the page's sessions.
step kernels-1b timeout 120 node node/host.mjs bench -model /tmp/m1b -decode 8 -prompt 512 -chunk 512 -runs 3 -kernels -shapes 1b -mib 64
{
	cat "$OUT/summary.txt"
	echo
	echo "page pp512, 1B, one 512-token step, runs 7 (median tok/s, slowest-fastest):"
	for f in new-page-1 old-page-1 new-page-2 old-page-2 new-page-sampled null-new null-old; do
		[ -f "$OUT/$f.txt" ] && grep -m1 '^prefill pp512' "$OUT/$f.txt" | sed "s/^/$f: /"
	done
	echo
	echo "phases of the median run (ms): Go in the module | JS in GPU imports (replaying) | awaiting the GPU | JS copying readbacks | rest | readbacks (MB) | lists (commands, copies)"
	for f in new-page-1 old-page-1 new-page-2 old-page-2 new-page-sampled null-new null-old; do
		[ -f "$OUT/$f.txt" ] || continue
		echo "$f: $(grep -A3 'by phase' "$OUT/$f.txt" | head -1 | sed 's/.*: //')"
		grep -A3 'by phase' "$OUT/$f.txt" | tail -1
		grep -m1 '^waits' "$OUT/$f.txt"
	done
	echo
	echo "package bench in the module (pp512 on one sequence, then on a new one each run: the last two columns):"
	grep 'gemma-3-1b' "$OUT/kernels-1b.txt" 2>/dev/null
	grep -m1 '^prefill pp512' "$OUT/kernels-1b.txt" 2>/dev/null | sed 's/^/page path in the same process: /'
	tail -3 "$OUT/kernels-1b.txt" 2>/dev/null | grep -i 'error\|host' 
} >"$OUT/table.txt" 2>&1
cat "$OUT/table.txt"
