#!/bin/sh
# device-epilogue.sh: gate|up's gated epilogue (webgpu.Fuse.Epilogue, the
# default decode plan now: 8 dispatches per layer, gated_quant's dispatch
# gone from decode steps) checked and measured on the H200, from the
# repository root. It needs what a device machine lacks and this one
# builds (Go is not there):
#
#   go test -c -o .devbin/shaders.test ./shaders
#   go test -c -o .devbin/webgpu.test ./engine/webgpu
#   go build -o .devbin/wick ./cmd/wick
#   make wasm
#
# plus node/node_modules (dawn.node) and node on PATH. Results go to $OUT:
# one file per step and summary.txt with each step's exit status and
# seconds. PARTS picks what runs (default all four): tests, dawn, native,
# profile.
#
# The plans (bench -plans): none = the plan before (gate|up, then
# gated_quant's one-workgroup dispatch, then down); epi = the new default
# (gate|up writes act(gate)*up and takes each token's max |h| by atomicMax;
# down's prologue quantises h in every workgroup, as the gated fold did
# with more work); epi+g64 = the same with down spread over at least 64
# workgroups only (fewer repeats of its prologue).
set -u
OUT=${OUT:?set OUT to the results folder}
PARTS=${PARTS:-tests dawn native profile}
root=$(pwd)
. "$(dirname "$0")/device-step.sh"
PLANS=none,epi,epi+g64
for part in $PARTS; do
	case $part in
	tests)
		# The kernels against engine/cpu at the H200's subgroup size (32), on
		# wgpu-native and Dawn's two tiers: the epilogue (h, the maxima) and
		# down's quant prologue (bit-identical to quantize's on the same h).
		step shaders sh -c "cd '$root/shaders' && timeout 300 '$root/.devbin/shaders.test' -test.v -test.run 'TestGatedEpilogue|TestStagedProducts'"
		# Whole models with the default plan (random models natively, cai-tiny
		# on Dawn), the dispatch counts, the maxima cleared every step.
		step webgpu sh -c "cd '$root/engine/webgpu' && timeout 400 '$root/.devbin/webgpu.test' -test.v -test.run 'TestMatchesCPU|TestModelMatchesCPUOnDawn|TestDecodeDispatches|TestGatedMaximaCleared'"
		;;
	dawn)
		# Decode tg128 and from 4096 inside the module on Dawn (device tier and
		# fallback rows), the plans side by side.
		B="node node/host.mjs bench -model testdata/cai-tiny -decode 128 -prompt 16 -kernels -mib 64 -plans $PLANS"
		step bench-dawn-1b timeout 500 $B -shapes 1b
		step bench-dawn-270m timeout 500 $B -shapes 270m
		;;
	native)
		step bench-native timeout 500 .devbin/wick bench -model '' -shapes 1b,270m -mib 64 -decode 128 -prompt 16 -plans $PLANS
		;;
	profile)
		# Where a 1B step goes (timestamp queries), before and after.
		step profile-dawn-1b timeout 400 node node/host.mjs bench -model testdata/cai-tiny -decode 64 -prompt 16 -kernels -mib 64 -shapes 1b \
			-plans none,epi -profile
		;;
	esac
done
