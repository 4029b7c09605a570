import { Command } from 'commander';
import { registerServe } from './serveCommand.js';
import { registerSegment } from './segmentCommand.js';
import { registerImportWeights } from './importWeightsCommand.js';
import { registerInitModel } from './initModelCommand.js';
import { registerSynth } from './synthCommand.js';
import { registerEvaluate } from './evaluateCommand.js';
import { registerIngest } from './ingestCommand.js';
import { registerPrepare } from './prepareCommand.js';
import { registerTrain } from './trainCommand.js';
import { registerTrainRpc } from './trainRpcCommands.js';

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
registerTrainRpc(program);
registerEvaluate(program);
registerInitModel(program);
registerImportWeights(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`histoseg: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
