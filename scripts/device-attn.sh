#!/bin/sh
# device-attn.sh: the decode attention paths' checks and benches on the
# H200, from the repository root. It needs what a device machine lacks and
# this one builds (Go is not there):
#
#   go test -c -o .devbin/shaders.test ./shaders
#   go test -c -o .devbin/webgpu.test ./engine/webgpu
#   go build -o .devbin/wick ./cmd/wick
#   make web/wick.wasm
#
# plus node/node_modules (dawn.node). Results go to $OUT: one file per step
# and summary.txt with each step's exit status and seconds.
#
# The paths (webgpu.Options.Attention, bench -plans parts): attn-split is
# the old decode attention (a workgroup per tile of 32 keys and query
# head); attn-group takes a KV head's query heads per workgroup (16-key
# tiles, scores split over 16 invocations) after qkv_prep's own dispatch;
# the default ("none": no product folds) is that with qkv_prep folded in
# (group-prep). roomN bounds the partial states per head (default 64):
# at 4096 a global layer's 256 tiles run 4 to a workgroup at room64.
set -u
OUT=${OUT:?set OUT to the results folder}
root=$(pwd)
. "$(dirname "$0")/device-step.sh"
# Kernels against engine/cpu at the H200's subgroup size (32), on Dawn's
# two tiers and wgpu-native: the grouped attention (both forms, runs of
# tiles, rings), the split one, the merges.
step shaders sh -c "cd '$root/shaders' && timeout 300 '$root/.devbin/shaders.test' -test.v -test.run 'TestGroupAttention|TestAttention'"
# Whole-model parity (cai-tiny) on Dawn's tiers with the default path.
step webgpu sh -c "cd '$root/engine/webgpu' && timeout 300 '$root/.devbin/webgpu.test' -test.v -test.run 'TestModelMatchesCPUOnDawn'"
# Decode tg128 and from 4096, inside the module on Dawn (device tier and
# fallback rows), the three paths side by side; then the room.
B="node node/host.mjs bench -model testdata/cai-tiny -decode 128 -prompt 16 -kernels -mib 64"
step bench-1b timeout 500 $B -shapes 1b -plans attn-split,attn-group,none
step bench-270m timeout 500 $B -shapes 270m -plans attn-split,attn-group,none
step bench-1b-room timeout 400 $B -shapes 1b -plans none+room16,none+room128,attn-group+room128
# Natively (wgpu-native, the fallback tier), the same three paths.
step native timeout 500 .devbin/wick bench -model "" -shapes 1b,270m -gemv 256x8 -mib 64 -decode 128 -prompt 16 -plans attn-split,attn-group,none
# Where a 1B step goes (timestamp queries, position 128), old and new.
step profile-1b timeout 400 $B -shapes 1b -plans attn-split,none -profile
