#!/bin/sh
# device-flashdef.sh: prefill attention's register variant as the default
# (branch flashdef) against the first variant it replaced
# (webgpu.Options.FlashFirst, plan part +flash-first), on the H200, from
# the repository root. pp512 of the 1B shape (and natively 270M) from
# package bench, both plans side by side in one run (medians of its timed
# runs): under Dawn inside the page's module (host.mjs bench -kernels) and
# natively on wgpu-native (wick bench); then the variants' checks against
# engine/cpu on the H200's compilers. Build first, here:
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
M=/tmp/m1b-flashdef
. "$(dirname "$0")/device-step.sh"
[ -d "$M" ] || step write-1b timeout 120 "$W" bench -write-shape 1b "$M"
# Dawn: the page part kept to one run (-runs 1; its pp512 is noisy), then
# package bench's tables with the two plans.
step dawn timeout 200 node node/host.mjs bench -model "$M" -decode 16 -prompt 512 -runs 1 -kernels -shapes 1b -mib 64 -plans epi,epi+flash-first
step native timeout 150 "$W" bench -model "" -shapes 1b,270m -mib 64 -decode 16 -prompt 512 -plans epi,epi+flash-first
if [ "${TESTS:-1}" = 1 ]; then
	step shaders sh -c "cd '$root/shaders' && timeout 90 '$root/.devbin/shaders.test' -test.v -test.run 'TestPrefillAttention|TestFlashShape'"
	step webgpu sh -c "cd '$root/engine/webgpu' && timeout 120 '$root/.devbin/webgpu.test' -test.v -test.run 'TestModelMatchesCPUOnDawn/.*/int8-greedy(-flash-first)?$|TestMatchesCPU/(cai-int8|plain-f32|.*flash.*)$'"
fi
{
	echo "Dawn (package bench in the module; pp512 is the last column; epi = register variant, the new default):"
	grep -E '^\| .*epi' "$OUT/dawn.txt" 2>/dev/null
	echo
	echo "native (wick bench):"
	grep -E '^\| .*epi' "$OUT/native.txt" 2>/dev/null
	echo
	echo "checks (FAIL lines, if any):"
	grep -h -- '--- FAIL' "$OUT/shaders.txt" "$OUT/webgpu.txt" 2>/dev/null | head -20
	echo
	cat "$OUT/summary.txt"
} >"$OUT/table.txt"
cat "$OUT/table.txt"
