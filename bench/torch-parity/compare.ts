// Manual check, not CI: import the PyTorch reference's weights and compare TF.js and the ONNX export with torch.
// Usage: npx tsx bench/torch-parity/compare.ts <folder written by export_reference.py>
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { relativeL2 } from '../../src/engine/engine.js';
import { OnnxEngine } from '../../src/engine/onnxEngine.js';
import { selectTfBackend } from '../../src/tf/backend.js';
import { TfjsEngine } from '../../src/engine/tfjsEngine.js';
import { buildSegClsModel } from '../../src/model/network/architecture.js';
import { importTorchWeights, readSafetensorsFile } from '../../src/model/network/importWeights.js';
import { exportOnnx } from '../../src/model/network/onnxExport.js';

const dir = process.argv[2];
if (!dir) throw new Error('usage: compare.ts <folder>');
const floats = async (name: string) => {
  const b = await readFile(join(dir, name));
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
};

const backend = await selectTfBackend();
const model = buildSegClsModel({ numClasses: 4 });
const report = importTorchWeights(model, await readSafetensorsFile(join(dir, 'reference.safetensors')), { heads: true });
console.log(`imported ${report.layers.length} layers; ignored ${report.ignored.length}; unused [${report.unused}]`);
const onnx = await OnnxEngine.create(exportOnnx(model, 4), 4, { intraOpNumThreads: 2 });
const tfjs = TfjsEngine.fromModel(model, 4, backend);
const input = { data: await floats('input.bin'), n: 2 };
const [mask, cls] = [await floats('mask.bin'), await floats('cls.bin')];
for (const engine of [tfjs, onnx]) {
  const out = await engine.run(input);
  console.log(`${engine.name} vs torch: relative L2 mask ${relativeL2(out.mask, mask).toExponential(2)}, cls ${relativeL2(out.cls, cls).toExponential(2)}`);
}
await onnx.dispose();
await tfjs.dispose();
