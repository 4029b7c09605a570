#!/usr/bin/env bash
# Mesa's software Vulkan driver (lavapipe) for the WebGPU parity tests. Dawn (inside onnxruntime-node and the
# `webgpu` package) needs a newer Mesa than bookworm's 22.3, so it comes from bookworm-backports (25.x), with the
# Vulkan loader. Idempotent and quiet: safe to run again.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
list=/etc/apt/sources.list.d/bookworm-backports.list
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  echo 'deb http://deb.debian.org/debian bookworm-backports main' > "$list"
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends -t bookworm-backports mesa-vulkan-drivers libvulkan1 > /dev/null
dpkg-query -W -f='${Package} ${Version}\n' mesa-vulkan-drivers libvulkan1
