#!/bin/sh
# device-chunks.sh: the page path's prefill by step length on a GPU machine
# (the H200), from the repository root: the Node host's bench (the page's
# driver, module and sessions, prefix cache on) reading a 512-token prompt
# of the 1B and 270M shapes with its progress reported, as the page reads
# one, in steps of 32 tokens (one per prefix cache block: the page's
# stepping before steps grew) up to 512 (webgpu.DefaultChunk). The bench's
# first line says how many steps each run took and that no run restored
# its prompt from the prefix cache. It needs what a device machine lacks
# and this one builds: web/wick.wasm (make wasm), a wick binary as $WICK
# (default .devbin/wick, to write the shapes) and node/node_modules
# (dawn.node). Results go to $OUT: one file per step and summary.txt with
# each step's exit status.
set -u
OUT=${OUT:?set OUT to the results folder}
WICK=${WICK:-.devbin/wick}
. "$(dirname "$0")/device-step.sh"
step write-1b timeout 120 "$WICK" bench -write-shape 1b /tmp/m1b
for chunk in 32 512 256 128 64; do
	step page-1b-chunk$chunk timeout 200 node node/host.mjs bench -model /tmp/m1b -decode 16 -prompt 512 -chunk $chunk -json "$OUT/page-1b-chunk$chunk.json"
done
# The same with the adapter's experimental features (subgroup matrices).
for chunk in 32 512; do
	step page-1b-experimental-chunk$chunk timeout 200 node node/host.mjs bench -model /tmp/m1b -decode 16 -prompt 512 -chunk $chunk -experimental
done
step write-270m timeout 120 "$WICK" bench -write-shape 270m /tmp/m270
for chunk in 32 512; do
	step page-270m-chunk$chunk timeout 200 node node/host.mjs bench -model /tmp/m270 -decode 16 -prompt 512 -chunk $chunk
done
