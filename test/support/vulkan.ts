import { existsSync } from 'node:fs';

/** Mesa's software Vulkan (lavapipe), from bookworm-backports: .ci/install-vulkan.sh installs it. */
const LAVAPIPE_ICD = '/usr/share/vulkan/icd.d/lvp_icd.json';
const haveVulkan = existsSync(LAVAPIPE_ICD) && (existsSync('/usr/lib/x86_64-linux-gnu/libvulkan.so.1') || existsSync('/usr/lib/aarch64-linux-gnu/libvulkan.so.1'));

/**
 * `skip` option for WebGPU tests: a reason when Mesa Vulkan is missing, false when it is there. Under CI=true a
 * missing driver fails instead of skipping.
 */
export function vulkanSkip(): string | false {
  if (haveVulkan) return false;
  const reason = `Mesa Vulkan (lavapipe) missing: run bash .ci/install-vulkan.sh (needs ${LAVAPIPE_ICD} and libvulkan1)`;
  if (process.env.CI === 'true') throw new Error(`CI=true: ${reason}`);
  return reason;
}
