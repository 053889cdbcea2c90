#!/bin/sh
# device-longpos.sh: decode at long positions on the H200 under Dawn,
# main's module against this branch's in one run, from the repository
# root. The branch's combine_quant loads the partial states it merges
# several at a time (it waited for each in turn: at 4096 a global layer's
# 52 states per head cost it 16 us against 7 us for 9 at position 128).
# It needs what a device machine lacks and this one builds (Go is not
# there):
#
#   make wasm                                 # web/wick.wasm, this branch's module
#   cp /work/main/web/wick.wasm .devbin/wick-main.wasm  # main's, built by make wasm there
#   go test -c -o .devbin/shaders.test ./shaders
#
# plus node/node_modules (dawn.node). Results go to $OUT: one file per
# step, summary.txt with each step's exit status and seconds, and
# table.txt (printed last): each run's decode tok/s at position 128 and
# from 4096 and the attention kernels' GPU time per step at both.
set -u
OUT=${OUT:?set OUT to the results folder}
root=$(pwd)
OLD=${OLD:-.devbin/wick-main.wasm}
NEW=${NEW:-web/wick.wasm}
. "$(dirname "$0")/device-step.sh"
# Package bench inside the module on Dawn: tg128 from position 128 and
# from 4096, with the omission profile (timestamps) at both positions.
B="node node/host.mjs bench -model testdata/cai-tiny -decode 128 -prompt 16 -kernels -mib 64 -profile"
for shape in 1b 270m; do
	step "old-$shape" timeout 120 $B -wasm "$OLD" -shapes $shape -plans default
	step "new-$shape" timeout 120 $B -wasm "$NEW" -shapes $shape -plans default
done
# The room for partial states (default 64: at 4096 a global layer's 257
# tiles run 5 to a workgroup): with a cheaper merge more states may pay.
step new-1b-rooms timeout 150 node node/host.mjs bench -model testdata/cai-tiny -decode 128 -prompt 16 -kernels -mib 64 -wasm "$NEW" -shapes 1b -plans default+room32,default+room128,default+room256
# Last (the benches first): the merge and the grouped attention against
# engine/cpu at the H200's subgroup size (32), on Dawn's two tiers and wgpu-native.
step shaders sh -c "cd '$root/shaders' && timeout 60 '$root/.devbin/shaders.test' -test.v -test.run 'TestCombineQuant|TestAttention/.*/(global-long-int8|local-decode-int8)\$|TestGroupAttention/.*/(global-runs-uneven-int8|ring-window-several-tiles-int8|global-producer-long-int8)\$'"
# The table: each run's model rows, then its attention kernels' lines.
for f in old-1b new-1b old-270m new-270m new-1b-rooms; do
	echo "== $f" >>"$OUT/table.txt"
	grep -E '^\| gemma|position [0-9]+|attend_group|combine' "$OUT/$f.txt" | cut -c1-160 >>"$OUT/table.txt" 2>/dev/null
done
cat "$OUT/summary.txt" "$OUT/table.txt"
