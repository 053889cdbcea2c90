#!/bin/sh
# device-flash.sh: prefill attention's variants on the H200, from the
# repository root: attend_flash as first written against
# its register variant (the default since branch flashdef; the first is
# webgpu.Options.FlashFirst; shaders.Key.Regs: 8 query
# rows by 16 keys a tile at head width 256) and the register variant with
# 32 keys a tile (FlashTile, Key.Tile 32: 4 rows, half the tiles) on the
# Gemma-3-1B shape's 512-token prefill (head width 256, 4 query heads on 1
# KV head, int8 KV). Under Dawn through the Node host (the page's path,
# one 512-token step, with the GPU time of each kernel from timestamp
# queries) and natively (package bench's pp512, the three plans side by
# side); then the checks of the variants against engine/cpu on the H200's
# compilers.
# Build first, here (Go is not on the device machine):
#
#   go build -o .devbin/wick ./cmd/wick      # writes the 1B shape; native bench
#   make wasm                                # web/wick.wasm
#   go test -c -o .devbin/shaders.test ./shaders
#   go test -c -o .devbin/webgpu.test ./engine/webgpu
#
# plus node/node_modules (dawn.node). Results go to $OUT: one file per
# step, summary.txt with each step's exit status and seconds, and
# table.txt (printed last). TESTS=0 leaves out the checks.
set -u
OUT=${OUT:?set OUT to the results folder}
root=$(pwd)
W=${WICK:-$root/.devbin/wick}
M=/tmp/m1b-flash
. "$(dirname "$0")/device-step.sh"
[ -d "$M" ] || step write-1b timeout 120 "$W" bench -write-shape 1b "$M"
# The page's path: pp512 (medians of 5) and the prefill's kernels, old
# variant, the register one, with 32 keys a tile, then old again (drift).
P="node node/host.mjs bench -model $M -decode 16 -prompt 512 -chunk 512 -profile"
step page-old timeout 150 $P -flash-first -json "$OUT/page-old.json"
step page-regs timeout 150 $P -json "$OUT/page-regs.json"
step page-regs32 timeout 150 $P -flash-tile 32 -json "$OUT/page-regs32.json"
step page-old2 timeout 150 $P -flash-first
# Natively (wgpu-native): pp512 of the three in one run.
step native timeout 200 "$W" bench -model "" -shapes 1b -mib 64 -decode 16 -prompt 512 -plans epi+flash-first,epi,epi+flash32
if [ "${TESTS:-1}" = 1 ]; then
	step shaders sh -c "cd '$root/shaders' && timeout 150 '$root/.devbin/shaders.test' -test.v -test.run 'TestPrefillAttention|TestFlashShape'"
	step webgpu sh -c "cd '$root/engine/webgpu' && timeout 150 '$root/.devbin/webgpu.test' -test.v -test.run 'TestModelMatchesCPUOnDawn/.*/int8-greedy(-flash-first)?$|TestMatchesCPU/(cai-int8|plain-f32|.*flash.*)$'"
fi
# table.txt: pp512 and attend_flash's GPU time a dispatch, by run.
{
	echo "| run | pp512 tok/s (page path) | attend_flash kernel | dispatches | us total | ms a dispatch | share |"
	echo "| --- | --- | --- | --- | --- | --- | --- |"
	for r in page-old page-regs page-regs32 page-old2; do
		pp=$(grep -m1 '^| prefill pp512' "$OUT/$r.txt" 2>/dev/null | cut -d'|' -f3 | tr -d ' ')
		grep -m1 '^| attn.attend_flash' "$OUT/$r.txt" 2>/dev/null |
			awk -F'|' -v r="$r" -v pp="$pp" '{gsub(/ /, "", $2); printf "| %s | %s | %s | %s | %s | %.3f | %s |\n", r, pp, $2, $3, $4, $4 / $3 / 1000, $5}'
	done
	echo
	echo "native (wick bench, pp512 last column):"
	grep -E '^\| .*epi' "$OUT/native.txt" 2>/dev/null
	echo
	echo "checks (FAIL lines, if any):"
	grep -h -- '--- FAIL' "$OUT/shaders.txt" "$OUT/webgpu.txt" 2>/dev/null | head -20
	echo
	cat "$OUT/summary.txt"
} >"$OUT/table.txt"
cat "$OUT/table.txt"
