#!/bin/sh
# device-prefill.sh: the prefill kernels' benches (and, with TESTS=1, their
# checks) on a GPU with subgroup matrices (the H200), from the repository
# root. It needs what a device machine lacks and this one builds (Go is not
# there):
#
#   go test -c -o .devbin/shaders.test ./shaders        # TESTS=1 only
#   go test -c -o .devbin/webgpu.test ./engine/webgpu   # TESTS=1 only
#   make wasm                                           # web/wick.wasm
#   a wick binary at .devbin/wick (or $WICK), to write the 1B shape
#
# plus node/node_modules (dawn.node). Results go to $OUT: one file per step
# and summary.txt with each step's exit status.
set -u
OUT=${OUT:?set OUT to the results folder}
root=$(pwd)
. "$(dirname "$0")/device-step.sh"
if [ "${TESTS:-0}" = 1 ]; then
	# Kernels against engine/cpu, Dawn with experimental features: the int8
	# tiled product on subgroup matrices (tier ...+matrix), the load units it
	# assumes, flash prefill attention.
	step shaders sh -c "cd '$root/shaders' && WICK_DAWN_EXPERIMENTAL=1 timeout 300 '$root/.devbin/shaders.test' -test.v -test.run 'TestMatrixLoadUnits|TestTierOf|TestMatrixProducts|TestAttention|TestPrefillAttention'"
	# Whole-model parity (cai-tiny) on Dawn's tiers, subgroup matrices included.
	step webgpu sh -c "cd '$root/engine/webgpu' && WICK_DAWN_EXPERIMENTAL=1 timeout 300 '$root/.devbin/webgpu.test' -test.v -test.run 'TestModelMatchesCPUOnDawn'"
fi
# The page path's model: the 1B shape (cai-tiny's context of 512 cannot
# take a 512-token prompt).
M=/tmp/m1b-prefill
W=${WICK:-$root/.devbin/wick}
[ -d "$M" ] || step write-1b "$W" bench -write-shape 1b "$M"
# pp512, in order of interest: the page path (chunks of 64) and, inside the
# module, package bench's 1B and 270M shapes (one 512-token step), each
# with the device's tier and the fallback side by side:
#   subgroup matrices + flash attention;
#   the same with prefill attention per (head, token) (isolates flash);
#   stock Chrome's features (dot4+subgroups) + flash;
#   then the 1B prefill by kernel (timestamp queries).
B="node node/host.mjs bench -model $M -decode 16 -prompt 512 -kernels -mib 64"
step bench-experimental timeout 500 $B -shapes 1b,270m -experimental
step bench-experimental-rowattn timeout 500 $B -shapes 1b -experimental -row-attention
step bench-stock timeout 500 $B -shapes 1b,270m
step profile-1b-experimental timeout 300 node node/host.mjs bench -model "$M" -decode 8 -prompt 512 -profile -experimental
