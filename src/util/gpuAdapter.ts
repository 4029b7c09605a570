/**
 * The WebGPU adapter a GPU engine or trainer will run on, read through Dawn for Node (the `webgpu` package).
 * onnxruntime-node's WebGPU provider carries its own Dawn and does not report its adapter, so the adapter is read
 * here with the same choice it makes (Vulkan on Linux, high-performance). A software adapter (Mesa's lavapipe,
 * SwiftShader) is refused unless allowed: on a GPU node it means the driver's Vulkan ICD is missing from the
 * container (NVIDIA_DRIVER_CAPABILITIES must include `graphics`), and it would be slower than the CPU engine.
 */
export interface GpuAdapterInfo {
  readonly vendor: string;
  readonly architecture: string;
  readonly device: string;
  readonly description: string;
  /** Dawn's fallback flag: a CPU (software) implementation. */
  readonly software: boolean;
}

export class GpuUnavailableError extends Error {}

/** Environment variable (and config key allowSoftwareGpu) that lets a software adapter through. */
export const ALLOW_SOFTWARE_GPU_ENV = 'HISTOSEG_ALLOW_SOFTWARE_GPU';

export function allowSoftwareGpuFromEnv(env: NodeJS.ProcessEnv = process.env): boolean {
  return ['1', 'true', 'yes'].includes((env[ALLOW_SOFTWARE_GPU_ENV] ?? '').toLowerCase());
}

/** Adapter info of Dawn's high-performance adapter; null when there is none. Requests no device. */
export async function probeGpuAdapter(): Promise<GpuAdapterInfo | null> {
  let webgpu: typeof import('webgpu');
  try {
    webgpu = await import('webgpu');
  } catch (err) {
    throw new GpuUnavailableError(`WebGPU for Node (the webgpu package, Dawn) failed to load: ${(err as Error).message}`);
  }
  const gpu = webgpu.create([]);
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) return null;
  const i = adapter.info;
  const software = i.isFallbackAdapter === true || i.architecture === 'software';
  return { vendor: i.vendor, architecture: i.architecture, device: i.device, description: i.description, software };
}

export function describeAdapter(a: GpuAdapterInfo): string {
  return `${a.vendor || 'unknown vendor'} ${a.architecture || ''} (${a.description || a.device})${a.software ? ', software' : ''}`.replace(/\s+/g, ' ');
}

/**
 * The adapter to use, or a GpuUnavailableError saying why not: no adapter at all (no Vulkan driver), or a
 * software one while `allowSoftware` is off.
 */
export async function requireGpuAdapter(allowSoftware: boolean): Promise<GpuAdapterInfo> {
  const a = await probeGpuAdapter();
  if (!a) {
    throw new GpuUnavailableError(
      'WebGPU was requested but no GPU adapter was found: is a Vulkan driver installed (libvulkan1 and the ' +
        "GPU's ICD; in containers on NVIDIA nodes NVIDIA_DRIVER_CAPABILITIES must include graphics)?",
    );
  }
  if (a.software && !allowSoftware) {
    throw new GpuUnavailableError(
      `WebGPU found only a software adapter: ${describeAdapter(a)}. It is slower than the CPU engine; on a GPU node ` +
        `it means the driver's Vulkan ICD is missing (NVIDIA_DRIVER_CAPABILITIES must include graphics). ` +
        `Set ${ALLOW_SOFTWARE_GPU_ENV}=1 (config allowSoftwareGpu) to use it anyway (tests and CI do).`,
    );
  }
  return a;
}
