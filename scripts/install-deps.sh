#!/usr/bin/env bash
# Installs the system packages wick's build and tests need, where missing or
# at the wrong version:
#   mesa-vulkan-drivers libvulkan1  lavapipe, a Vulkan driver on the CPU, so the
#                                   WebGPU tests run WGSL without a GPU (see below)
#   protobuf-compiler               `make proto` (the generated code is committed)
#   sentencepiece                   spm_train, to rebuild testdata tokenizers
#   chromium                        the browser end-to-end tests (headless, WebGPU on SwiftShader)
#   gcc                             cgo for the native WebGPU backend
#   nodejs npm                      the Node host (node/): Dawn, Chrome's WebGPU, through dawn.node
#   haproxy                         e2e's routing test: deploy/haproxy/haproxy.cfg in front of 3 servers
# Usage: scripts/install-deps.sh [package ...]   (default: all of the above)
#
# One Mesa for everything: lavapipe 25.0.7 from bookworm-backports, for
# wgpu-native (naga) and Dawn (Tint) alike. Dawn finds no adapter on
# bookworm's own 22.3.6 (it lacks shaderUniformBufferArrayDynamicIndexing),
# and apt holds one version of mesa-vulkan-drivers, so the other choice, a
# private 25.0.7 unpacked beside a system 22.3.6, would test the two WebGPU
# implementations on two different Vulkan drivers and keep 22.3.6's crashes.
# The version is pinned and checked, not merely present: an older lavapipe
# passes a presence check and then offers Dawn nothing.
set -euo pipefail
MESA_VERSION=25.0.7-2~bpo12+1
BACKPORTS=/etc/apt/sources.list.d/wick-bookworm-backports.list

pkgs=("$@")
if [ ${#pkgs[@]} -eq 0 ]; then
	pkgs=(mesa-vulkan-drivers libvulkan1 chromium protobuf-compiler sentencepiece gcc haproxy)
	command -v node >/dev/null && command -v npm >/dev/null || pkgs+=(nodejs npm)
fi

# want prints the version a package must have, or nothing when any will do.
want() {
	case "$1" in
	mesa-vulkan-drivers) echo "$MESA_VERSION" ;;
	esac
}

missing=()
for p in "${pkgs[@]}"; do
	have=$(dpkg-query -W -f='${db:Status-Abbrev}${Version}' "$p" 2>/dev/null || true)
	v=$(want "$p")
	case "$have" in
	"ii "*) [ -z "$v" ] || [ "${have#ii }" = "$v" ] || missing+=("$p=$v") ;;
	*) missing+=("$p${v:+=$v}") ;;
	esac
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
	exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if [ ! -f "$BACKPORTS" ] && ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
	echo 'deb http://deb.debian.org/debian bookworm-backports main' >"$BACKPORTS"
fi
apt-get update -qq
# Only Mesa (and what its version needs, libdrm) comes from backports.
mesa=() rest=()
for m in "${missing[@]}"; do
	case "$m" in mesa-vulkan-drivers*) mesa+=("$m") ;; *) rest+=("$m") ;; esac
done
[ ${#rest[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${rest[@]}" >/dev/null
[ ${#mesa[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends -t bookworm-backports "${mesa[@]}" >/dev/null
