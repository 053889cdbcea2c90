#!/bin/sh
# device-rows.sh: the decode plans of issue 12 item 2 (webgpu.Options.Fuse,
# RowRegs: register-held row kernels, each fold on its own) checked and
# measured side by side on a GPU, from the repository root. It needs what a
# device machine lacks and this one builds (Go is not there):
#
#   go test -c -o .devbin/shaders.test ./shaders
#   go test -c -o .devbin/webgpu.test ./engine/webgpu
#   go build -o .devbin/wick ./cmd/wick
#   make wasm
#
# plus node/node_modules (dawn.node) and node on PATH. Results go to $OUT:
# one file per step and summary.txt with each step's exit status and time.
set -u
OUT=${OUT:?set OUT to the results folder}
root=$(pwd)
. "$(dirname "$0")/device-step.sh"
# The plans, in the order of the tables: the default (rows reread from
# memory), the register-held row kernels, each fold on
# its own, the norm and gated folds with few workgroups per product (g32)
# and with a few more (g96). Decode attention is the default path (attend_group with qkv_prep folded in).
PLANS=none,none+regs,norm,gated,norm+gated,norm+gated+g32,norm+gated+g96
# Kernels against engine/cpu at the H200's subgroup size (wgpu-native, Dawn
# with and without features): the register-held prenorm and gated_quant,
# the products with register-held prologues.
step shaders sh -c "cd '$root/shaders' && timeout 300 '$root/.devbin/shaders.test' -test.v -test.run 'TestPrenorm|TestGatedQuant|TestStagedProducts'"
# Whole models against engine/cpu with the plans (greedy tokens equal, f32
# within 1e-3): random models on wgpu-native, cai-tiny on Dawn's tiers.
step webgpu sh -c "cd '$root/engine/webgpu' && timeout 400 '$root/.devbin/webgpu.test' -test.v -test.run 'TestMatchesCPU|TestModelMatchesCPUOnDawn'"
# Decode tg128 and from 4096 of each shape with every plan, on Dawn (the
# device's tier, then the fallback: package bench prints both).
B="node node/host.mjs bench -model testdata/cai-tiny -decode 128 -prompt 16 -kernels -mib 64 -plans $PLANS"
step bench-dawn-1b timeout 590 $B -shapes 1b
step bench-dawn-270m timeout 590 $B -shapes 270m
# The same natively (wgpu-native: the fallback tier only).
step bench-native timeout 590 .devbin/wick bench -model '' -shapes 1b,270m -mib 64 -prompt 16 -plans $PLANS
# Per-kernel GPU time (timestamps) of a 1B decode step: today's, the
# register-held rows, and the two folds with few workgroups.
step profile-dawn-1b timeout 590 node node/host.mjs bench -model testdata/cai-tiny -decode 64 -prompt 16 -kernels -mib 64 -shapes 1b \
	-plans none,none+regs,norm+gated+g32 -profile
