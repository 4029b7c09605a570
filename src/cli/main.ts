import { Command } from 'commander';
import { registerServe } from './serveCommand.js';

// Each area registers its own commands; this file only assembles them.
const program = new Command()
  .name('histoseg')
  .description('Segment whole-slide histopathology images (Learning to segment images with classification labels)')
  .showHelpAfterError();

registerServe(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`histoseg: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
