#!/usr/bin/env bash
# Runs ON the GPU machine, from the repository root, with .gpu-carry carried (bench/gpu/README.md). One call, at most
# 10 minutes: loaders, Node and the project unpacked, then the WebGPU measurements and PyTorch's on the same GPU.
# Results land in $OUT (the device tool brings them back); copy them into bench/results/ and commit.
set -uo pipefail
carry=$PWD/.gpu-carry
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
for f in "$carry"/gl/*.deb; do dpkg -x "$f" /; done; ldconfig
export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
[ -f "$VK_DRIVER_FILES" ] || unset VK_DRIVER_FILES   # let the loader search when the toolkit put the ICD elsewhere
work=/tmp/histoseg-gpu && rm -rf "$work" && mkdir -p "$work" && tar -xzf "$carry/project.tgz" -C "$work"
export PATH=$carry:$PATH
(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; uname -a; nproc) > "$out/machine.txt" 2>&1
cd "$work"
timeout 420 node node_modules/tsx/dist/cli.mjs bench/gpu/measure.ts --out "$out" 2> "$out/webgpu.log"; echo "webgpu rc=$?" >> "$out/machine.txt"
timeout 120 python3 bench/gpu/torch_gpu.py "$out/gpu-torch.json" "$carry" 2> "$out/torch.log"; echo "torch rc=$?" >> "$out/machine.txt"
tail -n 40 "$out/webgpu.log" "$out/torch.log"
