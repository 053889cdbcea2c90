#!/usr/bin/env bash
# Installs the system packages wick's build and tests need, where missing:
#   mesa-vulkan-drivers libvulkan1  lavapipe, a Vulkan driver on the CPU, so the
#                                   WebGPU backend's tests run WGSL without a GPU
#   protobuf-compiler               `make proto` (the generated code is committed)
#   sentencepiece                   spm_train, to rebuild testdata tokenizers
#   chromium                        the browser end-to-end tests (headless, WebGPU on SwiftShader)
#   gcc                             cgo for the native WebGPU backend
# Usage: scripts/install-deps.sh [package ...]   (default: all of the above)
set -euo pipefail
pkgs=("$@")
if [ ${#pkgs[@]} -eq 0 ]; then
	pkgs=(mesa-vulkan-drivers libvulkan1 chromium protobuf-compiler sentencepiece gcc)
fi
missing=()
for p in "${pkgs[@]}"; do
	dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
	exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
