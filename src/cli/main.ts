import { Command } from 'commander';
import { registerServe } from './serveCommand.js';
import { registerSegment } from '../client/segmentCommand.js';
import { registerImportWeights } from '../model/importWeightsCommand.js';
import { registerInitModel } from '../model/initModelCommand.js';
import { registerSynth } from '../training/synthCommand.js';
import { registerEvaluate } from '../evaluation/evaluateCommand.js';
import { registerIngest } from '../training/ingestCommand.js';
import { registerPrepare } from '../training/prepareCommand.js';
import { registerTrain } from '../training/trainCommand.js';

// Each area registers its own commands; this file only assembles them.
const program = new Command()
  .name('histoseg')
  .description('Segment whole-slide histopathology images (Learning to segment images with classification labels)')
  .showHelpAfterError();

registerServe(program);
registerSegment(program);
registerSynth(program);
registerIngest(program);
registerPrepare(program);
registerTrain(program);
registerEvaluate(program);
registerInitModel(program);
registerImportWeights(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`histoseg: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
