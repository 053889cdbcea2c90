#!/bin/sh
# device-host.sh: the Node host's measurements for issue 12 items 3 and 5
# on a GPU machine (the H200), from the repository root: JS encoding per
# command list with its parts (writes, finish+submit), sampled decoding
# with the multi-workgroup sampler, and per-kernel profiles from timestamp
# queries (the page's path and package bench's). It needs what a device
# machine lacks and this one builds: web/wick.wasm (make wasm), a wick
# binary as $WICK (default .devbin/wick) and node/node_modules (dawn.node).
# Results go to $OUT: one file per step and summary.txt with each step's
# exit status.
set -u
OUT=${OUT:?set OUT to the results folder}
WICK=${WICK:-.devbin/wick}
. "$(dirname "$0")/device-step.sh"
step write-1b timeout 120 "$WICK" bench -write-shape 1b /tmp/m1b
# The page's path: prefill, greedy and sampled decode with the JS encoding
# per list and its parts.
step page-1b timeout 300 node node/host.mjs bench -model /tmp/m1b -decode 128 -prompt 512 -json "$OUT/page-1b.json"
# The page's per-kernel profile (timestamp queries, no longer rounded to
# 65,536 ns), sampled (the sampler's kernels) and greedy.
step profile-1b-sampled timeout 200 node node/host.mjs bench -model /tmp/m1b -decode 32 -prompt 16 -profile -temp 0.8 -top-p 0.95
step profile-1b-greedy timeout 200 node node/host.mjs bench -model /tmp/m1b -decode 32 -prompt 16 -profile
# Package bench's profile inside the module: per kernel from timestamp
# queries (run_timed), both tiers.
step bench-profile-dawn timeout 500 node node/host.mjs bench -model testdata/cai-tiny -decode 32 -prompt 16 -kernels -shapes 1b -mib 64 -profile
# The same natively: wall clock (wgpu-native has no timestampWrites), and
# on Dawn through engine/gpu/dawn.
step bench-profile-native timeout 500 "$WICK" bench -model "" -shapes 1b -mib 64 -decode 32 -prompt 16 -long 0 -gemv 256x8,256x16 -profile
step bench-profile-godawn timeout 500 "$WICK" bench -dawn -model "" -shapes 1b -mib 64 -decode 32 -prompt 16 -long 0 -gemv 256x8,256x16 -profile
# 270M shape's page path, if time is left.
step write-270m timeout 120 "$WICK" bench -write-shape 270m /tmp/m270
step page-270m timeout 300 node node/host.mjs bench -model /tmp/m270 -decode 128 -prompt 512 -json "$OUT/page-270m.json"
