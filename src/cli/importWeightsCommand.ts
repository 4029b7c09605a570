import type { Command } from 'commander';

export function registerImportWeights(program: Command): void {
  program
    .command('import-weights')
    .description('load torchvision ResNet-18 weights (safetensors: conv1, bn1, layer1..layer3) into a model version')
    .requiredOption('--weights <file>', 'safetensors file with torchvision state_dict keys (fc.* and layer4.* are ignored)')
    .requiredOption('--model-dir <dir>', 'model version folder, models/<name>/<version>; its TF.js and ONNX files are rewritten')
    .option('--heads', 'also load decoder.* and classifier.* (the PyTorch reference module names)', false)
    .action(async (flags: { weights: string; modelDir: string; heads: boolean }) => {
      // TF.js loads only when this command runs, not whenever the CLI starts.
      const { importWeightsIntoVersion } = await import('../model/network/importWeights.js');
      const r = await importWeightsIntoVersion(flags.modelDir, flags.weights, { heads: flags.heads });
      process.stdout.write(
        `imported ${r.layers.length} layers into ${flags.modelDir}; ignored ${r.ignored.length} keys` +
          (r.unused.length > 0 ? `; unused: ${r.unused.join(', ')}` : '') +
          '\n',
      );
    });
}
