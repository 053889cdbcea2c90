#!/bin/sh
# device-prefillgemm.sh: the prefill product's written-out 64x64 tiles on
# the H200 under Dawn, from the repository root. First the kernel checks
# (every tiled variant's int32 sums against engine/cpu at awkward sizes,
# poisoned outputs): with subgroup matrices (-experimental: the MATRIX
# 64x64 tile, its split form, the Dawn matrix loads' units) and on the
# stock tier (the DOT4 64x64 tile's split form). Then 1B pp512 in 512-token
# steps, package bench in the module (medians of 5 runs, ± half the
# spread), plans side by side: epi (the default, the first 64x64 DOT4
# tile), epi+tile64 (the written-out 64x64 tile: MATRIX with
# -experimental, DOT4 without), epi+tile64+split (the same, products of few
# rows split along their columns), epi+tile128 (the large tile); and the
# page's 512-token prefill by kernel (-profile) with the default tile and
# with tile64+split, for the tiled kernels' GPU time. Build first, here (Go
# is not on the device machine):
#
#   go test -c -o .devbin/shaders.test ./shaders
#   go test -c -o .devbin/webgpu.test ./engine/webgpu
#   go build -o .devbin/wick ./cmd/wick       # writes the 1B shape
#   make wasm                                  # web/wick.wasm
#
# plus node/node_modules (dawn.node). Results go to $OUT: one file per step,
# summary.txt with each step's exit status, table.txt (printed last).
# TESTS=0, STOCK=0, PAGE=0 leave out the checks, the stock tier's bench or
# the page profiles, to fit a call's time; STOCKPAGE=1 adds the page
# profiles on the stock tier.
set -u
OUT=${OUT:?set OUT to the results folder}
root=$(pwd)
. "$(dirname "$0")/device-step.sh"
if [ "${TESTS:-1}" = 1 ]; then
	step shaders-matrix sh -c "cd '$root/shaders' && WICK_DAWN_EXPERIMENTAL=1 timeout 150 '$root/.devbin/shaders.test' -test.v -test.run 'TestMatrixLoadUnits|TestTierOf|TestMatrixProducts|TestTiledSplit'"
	step webgpu-matrix sh -c "cd '$root/engine/webgpu' && WICK_DAWN_EXPERIMENTAL=1 timeout 120 '$root/.devbin/webgpu.test' -test.v -test.run 'TestModelMatchesCPUOnDawn/.*/int8-greedy(-tile64.*)?$'"
	step shaders-stock sh -c "cd '$root/shaders' && timeout 60 '$root/.devbin/shaders.test' -test.v -test.run 'TestTiledSplit|TestMatrixProducts/.*/tiled-t64'"
fi
# M and PROMPT (the page's model and prompt) and BENCH=0 (no package
# bench) only for a dry run elsewhere (a test model, a short prompt).
M=${M:-/tmp/m1b-prefillgemm}
PROMPT=${PROMPT:-512}
W=${WICK:-$root/.devbin/wick}
[ -d "$M" ] || step write-1b timeout 120 "$W" bench -write-shape 1b "$M"
B="node node/host.mjs bench -model $M -decode 16 -prompt 512 -kernels -mib 64 -shapes 1b -plans epi,epi+tile64,epi+tile64+split,epi+tile128"
[ "${BENCH:-1}" = 1 ] && step bench-experimental timeout 300 $B -experimental
[ "${BENCH:-1}" = 1 ] && [ "${STOCK:-1}" = 1 ] && step bench-stock timeout 300 node node/host.mjs bench -model $M -decode 16 -prompt 512 -kernels -mib 64 -shapes 1b -plans epi,epi+tile64,epi+tile64+split
if [ "${PAGE:-1}" = 1 ]; then
	P="node node/host.mjs bench -model $M -decode 16 -prompt $PROMPT -chunk $PROMPT -runs 3 -profile -experimental"
	step page-default timeout 120 $P
	step page-tile64-split timeout 120 $P -prefill-tile 64 -prefill-split
fi
if [ "${STOCKPAGE:-0}" = 1 ]; then
	# The same on the stock tier (the DOT4 tiles), where a call has time.
	P="node node/host.mjs bench -model $M -decode 16 -prompt $PROMPT -chunk $PROMPT -runs 3 -profile"
	step page-stock-default timeout 120 $P
	step page-stock-tile64-split timeout 120 $P -prefill-tile 64 -prefill-split
fi
{
	echo "checks:"
	for f in shaders-matrix webgpu-matrix shaders-stock; do
		[ -f "$OUT/$f.txt" ] && echo "$f: $(grep -c -- '--- PASS' "$OUT/$f.txt") passed, $(grep -c -- '--- SKIP' "$OUT/$f.txt") skipped, $(grep -c -- '--- FAIL' "$OUT/$f.txt") failed" && grep -h -m8 -A2 -- '--- FAIL' "$OUT/$f.txt"
	done
	grep -h -E 'matrix loads|runs tiled|tiled product runs as' "$OUT"/shaders-matrix.txt 2>/dev/null | sed 's/^ *//' | sort -u | head -6
	echo
	echo "1B pp512 (package bench, 512-token steps): file | kernels | plan | pp512 tok/s | on a new sequence | tg16"
	for f in bench-experimental bench-stock; do
		[ -f "$OUT/$f.txt" ] && awk -F'|' -v f="$f" '$2 ~ /gemma-3-1b/ { printf "%s |%s|%s|%s|%s|%s\n", f, $3, $4, $11, $12, $7 }' "$OUT/$f.txt"
	done
	echo
	echo "page prefill of $PROMPT tokens (page-stock-*: without -experimental): tiled kernels' GPU time (label | dispatches | us | share)"
	for f in page-default page-tile64-split page-stock-default page-stock-tile64-split; do
		[ -f "$OUT/$f.txt" ] || continue
		echo "$f: $(grep -h -m1 "^prefill pp$PROMPT:" "$OUT/$f.txt" | sed 's/.*; //'); $(grep -h -m1 "prefill of $PROMPT tokens by kernel" "$OUT/$f.txt" | sed 's/.*: //')"
		grep -h -E '^\| (tiled|attn\.attend_flash)' "$OUT/$f.txt" | head -8
	done
	echo
	cat "$OUT/summary.txt"
} >"$OUT/table.txt" 2>&1
cat "$OUT/table.txt"
