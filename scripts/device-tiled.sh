#!/bin/sh
# device-tiled.sh: the prefill product's tiles on the H200, from the
# repository root: the kernel checks (the 128x128 DOT4 tile and the
# MATRIX variant against engine/cpu), then pp512 of the 1B shape with the
# tile chosen by shape (the default), the 64x64 tile everywhere (the old
# product) and the 128x128 one everywhere, side by side in one run. Build
# first, here (Go is not on the device machine):
#
#   go test -c -o .devbin/shaders.test ./shaders
#   go test -c -o .devbin/webgpu.test ./engine/webgpu
#   make wasm                                # web/wick.wasm
#   a wick binary at .devbin/wick (or $WICK), to write the 1B shape
#
# plus node/node_modules (dawn.node). Results go to $OUT: one file per
# step and summary.txt with each step's exit status. TESTS=0, STOCK=0,
# EXPERIMENTAL=0 leave out the checks or a half of the benches, to fit a
# call's time.
set -u
OUT=${OUT:?set OUT to the results folder}
root=$(pwd)
. "$(dirname "$0")/device-step.sh"
if [ "${TESTS:-1}" = 1 ]; then
	# The products against engine/cpu on every device: stock tier (the
	# 128x128 DOT4 tile), then with subgroup matrices (MATRIX).
	step shaders-stock sh -c "cd '$root/shaders' && timeout 200 '$root/.devbin/shaders.test' -test.v -test.run 'TestMatrixProducts|TestTiledSplit|TestTierOf'"
	step shaders-matrix sh -c "cd '$root/shaders' && WICK_DAWN_EXPERIMENTAL=1 timeout 200 '$root/.devbin/shaders.test' -test.v -test.run 'TestMatrixLoadUnits|TestTierOf|TestMatrixProducts|TestTiledSplit'"
	step webgpu sh -c "cd '$root/engine/webgpu' && WICK_DAWN_EXPERIMENTAL=1 timeout 300 '$root/.devbin/webgpu.test' -test.v -test.run 'TestModelMatchesCPUOnDawn'"
fi
M=/tmp/m1b-prefill
W=${WICK:-$root/.devbin/wick}
[ -d "$M" ] || step write-1b "$W" bench -write-shape 1b "$M"
# pp512 in 512-token steps (package bench's 1B shape), medians of 5 runs
# with their spread, five plans (epi: the default decode plan): the
# default (the first 64x64 tile), +tile64 (the DOT4 64x64 tile with its
# loops written out), +tile128 (the large tile everywhere), +split
# (the products of few rows split along their columns on the large DOT4
# tile, the others 64x64), +tile128+split (the others on the large tile).
# Stock Chrome's tier first, then with subgroup matrices (the 64x64 tiles
# stay DOT4 there now; +tile128 runs the MATRIX product's 128x128 tile).
B="node node/host.mjs bench -model $M -decode 16 -prompt 512 -kernels -mib 64 -shapes 1b -plans epi,epi+tile64,epi+tile128,epi+split,epi+tile128+split"
# STOCK=0 or EXPERIMENTAL=0 leaves that half out (each may take minutes).
[ "${STOCK:-1}" = 1 ] && step bench-stock timeout 500 $B
[ "${EXPERIMENTAL:-1}" = 1 ] && step bench-experimental timeout 500 $B -experimental
