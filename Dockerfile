# syntax=docker/dockerfile:1.7
# histoseg: gRPC segmentation service for whole-slide histopathology images.
#
#   CPU (default):  docker build -t histoseg:cpu .
#   GPU:            docker build --build-arg GPU=true -t histoseg:gpu .
#
# The GPU variant adds onnxruntime-node's CUDA 12 execution provider (serving) and @tensorflow/tfjs-node-gpu
# (training), and the Vulkan loader for the WebGPU device (onnxruntime's WebGPU provider and TF.js WebGPU, both Dawn
# over the driver's Vulkan ICD), on an NVIDIA CUDA base. See docs/gpu.md for which device to choose.

ARG NODE_IMAGE=node:20-bookworm-slim
# cuDNN 9 + CUDA 12: what onnxruntime-node 1.30's CUDA provider links against.
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04
ARG GPU=false

# ---------------------------------------------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS build
ARG GPU
WORKDIR /app

# tfjs-node-gpu compiles its addon when no prebuilt one matches; the CPU build compiles nothing.
RUN if [ "$GPU" = "true" ]; then \
      apt-get update && apt-get install -y --no-install-recommends python3 make g++ ca-certificates \
      && rm -rf /var/lib/apt/lists/*; \
    fi

# Dependencies first, so source edits keep this layer cached.
COPY package.json package-lock.json .npmrc ./
# No dependency install scripts run here, whatever the npm version: npm >= 11.16 reviews them against an allowScripts
# policy (enforced by default from npm 12), npm 10 runs them all. Nothing the CPU image needs has one that matters
# (onnxruntime-node ships its CPU binaries, sharp's come in @img/* packages); the GPU step below runs exactly the two
# scripts it needs, by name.
RUN npm ci --ignore-scripts --no-audit --no-fund

# GPU: run the install scripts of exactly these two packages: onnxruntime's CUDA 12 provider (ONNXRUNTIME_NODE_INSTALL
# wins over .npmrc's `skip`) and libtensorflow-gpu. `npm rebuild <pkg>` touches only the named packages, so the policy
# bypass is scoped to them; it also works where package.json has no allowScripts entry for them (npm 12 would skip
# them), and npm 10 ignores the flag it does not know.
RUN if [ "$GPU" = "true" ]; then \
      ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild --foreground-scripts --dangerously-allow-all-scripts \
        onnxruntime-node @tensorflow/tfjs-node-gpu; \
    fi

COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# Production dependencies only. The tfjs-node packages were installed without their native parts: drop the ones this
# variant does not use, so the engine does not try to load a half-installed addon. Dependencies' source maps and
# onnxruntime's binaries for other platforms are dead weight (682 MB -> 231 MB of node_modules on x64).
RUN npm prune --omit=dev --ignore-scripts --no-audit --no-fund \
    && rm -rf node_modules/@tensorflow/tfjs-node \
    && if [ "$GPU" != "true" ]; then rm -rf node_modules/@tensorflow/tfjs-node-gpu; fi \
    && find node_modules -name '*.map' -type f -delete \
    && find node_modules/onnxruntime-node/bin/napi-v6 -mindepth 2 -maxdepth 2 \
         ! -path "*/linux/$(node -p process.arch)" -exec rm -rf {} + \
    && find node_modules/webgpu/dist -mindepth 1 -maxdepth 1 ! -name "linux-$(node -p process.arch)" -exec rm -rf {} +

# ---------------------------------------------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS base-gpu-false
RUN apt-get update && apt-get install -y --no-install-recommends tini && rm -rf /var/lib/apt/lists/*

# ---------------------------------------------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS base-gpu-true
# libtensorflow 2.9 (tfjs-node-gpu 4.22) needs CUDA 11 and cuDNN 8 next to the base's CUDA 12 / cuDNN 9 for onnxruntime;
# the sonames differ, so both sets coexist. Without them tfjs-node-gpu still loads and trains on the CPU.
# libvulkan1: the Vulkan loader Dawn opens for the webgpu device; the driver's ICD comes from the host through the
# container toolkit when NVIDIA_DRIVER_CAPABILITIES includes graphics (set below).
RUN apt-get update && apt-get install -y --no-install-recommends tini ca-certificates libvulkan1 \
      cuda-cudart-11-8 libcublas-11-8 libcufft-11-8 libcurand-11-8 libcusolver-11-8 libcusparse-11-8 \
      libcudnn8=8.9.7.29-1+cuda11.8 \
    && rm -rf /var/lib/apt/lists/*
# x86_64 only: onnxruntime-node has CUDA binaries for linux/x64 alone.
ENV LD_LIBRARY_PATH=/usr/local/cuda-11.8/targets/x86_64-linux/lib:${LD_LIBRARY_PATH} \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics
# The official Node build needs glibc >= 2.28; Ubuntu 22.04 has 2.35.
COPY --from=build /usr/local/bin/node /usr/local/bin/node

# ---------------------------------------------------------------------------------------------------------------------
FROM base-gpu-${GPU} AS runtime
WORKDIR /app

# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --gid 10001 histoseg \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin histoseg

ENV NODE_ENV=production \
    HISTOSEG_HOST=0.0.0.0 \
    HISTOSEG_PORT=50051 \
    HISTOSEG_METRICS_PORT=9464 \
    HISTOSEG_MODELS=/app/models

# Owned by root and not writable by the service user: the image is immutable at run time.
COPY package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY bin ./bin
# Server reflection loads the .proto files at run time.
COPY proto ./proto
# The bundled model repository (HISTOSEG_MODELS); mount a volume over it to serve other models.
COPY models ./models

USER 10001:10001
EXPOSE 50051 9464

# Ready = model loaded and warm (same signal as the Kubernetes readiness probe). Kubernetes ignores HEALTHCHECK.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.HISTOSEG_METRICS_PORT || '9464') + '/readyz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

# tini is PID 1: it forwards SIGTERM to node (which drains, then exits) and reaps zombies.
ENTRYPOINT ["/usr/bin/tini", "--"]
# The flag is SERVE_NODE_FLAGS (src/cli/serveCommand.ts): fewer full GCs under load.
CMD ["node", "--initial-old-space-size=128", "bin/histoseg.js", "serve"]
