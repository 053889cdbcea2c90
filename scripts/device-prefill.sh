#!/bin/sh
# device-prefill.sh: the prefill kernels' checks and benches on a GPU with
# subgroup matrices (the H200), from the repository root. It needs what a
# device machine lacks and this one builds (Go is not there):
#
#   go test -c -o .devbin/shaders.test ./shaders
#   go test -c -o .devbin/webgpu.test ./engine/webgpu
#   make web/wick.wasm
#
# plus node/node_modules (dawn.node). Results go to $OUT: one file per step
# and summary.txt with each step's exit status.
set -u
OUT=${OUT:?set OUT to the results folder}
root=$(pwd)
step() {
	name=$1
	shift
	"$@" >"$OUT/$name.txt" 2>&1
	echo "$name rc=$?" >>"$OUT/summary.txt"
}
# Kernels against engine/cpu, Dawn with experimental features: the int8
# tiled product on subgroup matrices (tier ...+matrix), the load units it
# assumes, and the other tiers' products beside it.
step shaders sh -c "cd '$root/shaders' && WICK_DAWN_EXPERIMENTAL=1 timeout 300 '$root/.devbin/shaders.test' -test.v -test.run 'TestMatrixLoadUnits|TestTierOf|TestMatrixProducts|TestAttention|TestPrefillAttention'"
# Whole-model parity (cai-tiny) on Dawn's tiers, subgroup matrices included.
step webgpu sh -c "cd '$root/engine/webgpu' && WICK_DAWN_EXPERIMENTAL=1 timeout 300 '$root/.devbin/webgpu.test' -test.v -test.run 'TestModelMatchesCPUOnDawn'"
# pp512 of the 1B and 270M shapes inside the module (package bench: the
# device's tier and the fallback side by side), in order of interest:
# subgroup matrices + flash attention; the same with prefill attention per
# (head, token) as before (isolates the flash kernel); stock Chrome's
# features (dot4+subgroups) + flash.
B="node node/host.mjs bench -model testdata/cai-tiny -decode 16 -prompt 512 -kernels -shapes 1b,270m -mib 64"
step bench-experimental timeout 500 $B -experimental
step bench-experimental-rowattn timeout 500 $B -experimental -row-attention
step bench-stock timeout 500 $B
# Prefill of the 1B shape by kernel (timestamp queries), subgroup matrices
# and flash attention: what bounds pp512 now. Needs a wick binary (this
# machine's, as .devbin/wick) to write the shape's model directory.
W=${WICK:-$root/.devbin/wick}
if [ -x "$W" ]; then
	step write-1b "$W" bench -write-shape 1b /tmp/m1b-prefill
	step profile-1b-experimental timeout 300 node node/host.mjs bench -model /tmp/m1b-prefill -decode 8 -prompt 512 -profile -experimental
fi
