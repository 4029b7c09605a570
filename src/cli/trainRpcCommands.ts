// Commands for a running server's TrainingService and ModelService: upload a dataset as examples, start, watch,
// cancel and list fine-tuning jobs, list and activate model versions.
import { readFile } from 'node:fs/promises';
import { basename, relative } from 'node:path';
import cliProgress from 'cli-progress';
import type { Command } from 'commander';
import sharp from 'sharp';
import { connect, type HistosegClients } from '../client/segmentationClient.js';
import { activateModel, cancelTraining, listModels, listTrainingJobs, startTraining, uploadExamples, watchTraining } from '../client/trainingClient.js';
import { loadSlideLabels, sizeAtMpp } from '../data/datasets/dataset.js';
import { readDataset } from '../data/datasets/readDataset.js';
import { encodeLabelMap } from '../data/labels/labelMap.js';
import { openSlide, readSlideRgb } from '../data/slides/slideReader.js';
import { ExampleSplit, JobState, type Example, type TrainingJob } from '../proto/gen/histoseg/v1/training.js';
import { MODEL_MPP } from '../util/constants.js';
import { readTokenFile } from './segmentCommand.js';

interface RemoteFlags {
  server: string;
  ca?: string;
  tokenFile?: string;
}

function remote(cmd: Command): Command {
  return cmd
    .requiredOption('--server <host:port>', 'histoseg server address')
    .option('--ca <file>', 'PEM CA of a TLS server (default: plaintext)')
    .option('--token-file <file>', 'file with the bearer token (train role; admin to activate)');
}

async function withClients<T>(flags: RemoteFlags, fn: (c: HistosegClients) => Promise<T>): Promise<T> {
  const c = connect(flags.server, { caFile: flags.ca, token: flags.tokenFile ? readTokenFile(flags.tokenFile) : undefined });
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

const SPLIT = { train: ExampleSplit.EXAMPLE_SPLIT_TRAIN, validation: ExampleSplit.EXAMPLE_SPLIT_VALIDATION } as const;

/**
 * A dataset folder (generic, BACH or EBHI layout) as examples: each slide with its labels at the model's scale (a
 * segmentation example; validation slides stay validation, test slides are not sent), each class patch as a
 * classification example with its own bytes.
 */
export async function* datasetExamples(dir: string): AsyncGenerator<Example> {
  const dataset = await readDataset(dir);
  for (const slide of dataset.slides) {
    if (slide.split === 'test') continue;
    const size = sizeAtMpp(slide, MODEL_MPP);
    const [rgb, labels] = await Promise.all([openSlide(slide.image).then((s) => readSlideRgb(s, size.width, size.height)), loadSlideLabels(slide, dataset, size)]);
    yield {
      exampleId: `slide:${slide.name}`,
      image: await sharp(rgb.data, { raw: { width: rgb.width, height: rgb.height, channels: 3 } }).png().toBuffer(),
      mpp: slide.mpp === null ? 0 : MODEL_MPP,
      mask: await encodeLabelMap({ labels: labels.labels, width: size.width, height: size.height }),
      classIndex: undefined,
      split: SPLIT[slide.split ?? 'train'],
    };
  }
  for (const p of dataset.patches) {
    yield { exampleId: `patch:${relative(dataset.root, p.path)}`, image: await readFile(p.path), mpp: 0, mask: undefined, classIndex: p.classIndex, split: ExampleSplit.EXAMPLE_SPLIT_TRAIN };
  }
}

export async function datasetClasses(dir: string): Promise<{ classes: string[]; count: number }> {
  const d = await readDataset(dir);
  return { classes: d.classes, count: d.slides.filter((s) => s.split !== 'test').length + d.patches.length };
}

const STATE_NAME: Record<number, string> = {
  [JobState.JOB_STATE_QUEUED]: 'QUEUED',
  [JobState.JOB_STATE_RUNNING]: 'RUNNING',
  [JobState.JOB_STATE_SUCCEEDED]: 'SUCCEEDED',
  [JobState.JOB_STATE_FAILED]: 'FAILED',
  [JobState.JOB_STATE_CANCELLED]: 'CANCELLED',
};

const fmtMetrics = (m: Record<string, number>) => Object.entries(m).map(([k, v]) => `${k} ${v.toFixed(4)}`).join(', ') || '-';

export function formatJob(j: TrainingJob): string {
  const parts = [`${j.jobId} ${STATE_NAME[j.state] ?? j.state} dataset ${j.dataset} base ${j.baseModel} epoch ${j.epoch}/${j.epochs} (${j.stage})`];
  if (j.loss) parts.push(`loss ${j.loss.toFixed(4)}`);
  if (j.modelVersion) parts.push(`-> ${j.modelName}@${j.modelVersion}${j.activated ? ' (activated)' : ''}`);
  if (Object.keys(j.validationMetrics).length > 0) parts.push(`new: ${fmtMetrics(j.validationMetrics)}; base: ${fmtMetrics(j.baseMetrics)}`);
  if (j.error) parts.push(j.error);
  return parts.join(', ');
}

/** Follows a job to its end: a progress bar on a terminal, a line per change otherwise. Returns the last state. */
async function follow(c: HistosegClients, jobId: string, json: boolean): Promise<TrainingJob> {
  const bar =
    !json && process.stderr.isTTY
      ? new cliProgress.SingleBar({ stream: process.stderr, format: 'epoch {epoch}/{epochs} |{bar}| {percentage}% | {stage} | loss {loss}', hideCursor: true }, cliProgress.Presets.shades_classic)
      : undefined;
  let last: TrainingJob | undefined;
  let lastLine = '';
  for await (const j of watchTraining(c, jobId)) {
    last = j;
    if (bar) {
      const payload = { epoch: j.epoch, epochs: j.epochs, stage: j.stage, loss: j.loss ? j.loss.toFixed(4) : '-' };
      if (!bar.isActive) bar.start(100, Math.round(j.progress * 100), payload);
      else bar.update(Math.round(j.progress * 100), payload);
    } else if (json) process.stdout.write(JSON.stringify(j) + '\n');
    else {
      const line = `${STATE_NAME[j.state]} epoch ${j.epoch}/${j.epochs} ${j.stage}`;
      if (line !== lastLine) process.stderr.write(line + '\n');
      lastLine = line;
    }
  }
  bar?.stop();
  if (!last) throw new Error(`no news of job ${jobId}`);
  if (!json) process.stdout.write(formatJob(last) + '\n');
  return last;
}

function exitFor(j: TrainingJob): void {
  if (j.state !== JobState.JOB_STATE_SUCCEEDED) process.exitCode = 1;
}

export function registerTrainRpc(program: Command): void {
  remote(program.command('upload').description('send a dataset folder (generic, BACH or EBHI layout) to a server as labelled examples'))
    .requiredOption('--dataset <name>', 'dataset name on the server')
    .requiredOption('--data <dir>', 'dataset folder')
    .option('--json', 'print the answer as JSON')
    .action(async (flags: RemoteFlags & { dataset: string; data: string; json?: boolean }) => {
      const { classes, count } = await datasetClasses(flags.data);
      const bar = process.stderr.isTTY
        ? new cliProgress.SingleBar({ stream: process.stderr, format: 'examples {bar} {value}/{total} | {mb} MB', hideCursor: true }, cliProgress.Presets.shades_classic)
        : undefined;
      bar?.start(count, 0, { mb: '0.0' });
      const t0 = performance.now();
      let sentBytes = 0;
      const res = await withClients(flags, (c) =>
        uploadExamples(c, flags.dataset, classes, datasetExamples(flags.data), (n, bytes) => {
          sentBytes = bytes;
          bar?.update(n, { mb: (bytes / 1e6).toFixed(1) });
        }),
      ).finally(() => bar?.stop());
      const s = (performance.now() - t0) / 1000;
      if (flags.json) process.stdout.write(JSON.stringify(res) + '\n');
      else {
        process.stdout.write(
          `${basename(flags.data)} -> ${res.dataset}: ${res.accepted} accepted, ${res.rejected.length} rejected, ${res.datasetExamples} examples in the dataset; ` +
            `${(sentBytes / 1e6).toFixed(1)} MB in ${s.toFixed(1)} s\n`,
        );
        for (const r of res.rejected) process.stdout.write(`  rejected ${r.exampleId}: ${r.error}\n`);
      }
      if (res.rejected.length > 0) process.exitCode = 1;
    });

  const jobs = program.command('jobs').description('fine-tuning jobs on a server');
  remote(jobs.command('start').description('start a fine-tuning job'))
    .requiredOption('--dataset <name>', 'dataset on the server')
    .option('--base <name[@version]>', "model to start from (default: the server's default)")
    .option('--output-name <name>', "model name of the new version (default: the base's)")
    .option('--setting <S|S+C|S+C*>', 'training setting (default S+C*)')
    .option('--epochs <n>', "epochs (default: the server's)", (v) => Number(v))
    .option('--seed <n>', 'seed', (v) => Number(v))
    .option('--activate', 'make the result the default if it scores at least as well as the base (admin role)')
    .option('--watch', 'follow the job to its end')
    .option('--json', 'print JSON')
    .action(async (flags: RemoteFlags & { dataset: string; base?: string; outputName?: string; setting?: string; epochs?: number; seed?: number; activate?: boolean; watch?: boolean; json?: boolean }) => {
      await withClients(flags, async (c) => {
        const job = await startTraining(c, {
          dataset: flags.dataset,
          baseModel: flags.base ?? '',
          outputName: flags.outputName ?? '',
          setting: flags.setting ?? '',
          epochs: flags.epochs ?? 0,
          seed: flags.seed ?? 0,
          activate: !!flags.activate,
        });
        process.stdout.write(flags.json ? JSON.stringify(job) + '\n' : `${job.jobId}\n`);
        if (flags.watch) exitFor(await follow(c, job.jobId, !!flags.json));
      });
    });
  remote(jobs.command('watch').description('follow a job to its end (a progress bar on a terminal)').argument('<job-id>'))
    .option('--json', 'one JSON object per change')
    .action(async (jobId: string, flags: RemoteFlags & { json?: boolean }) => {
      await withClients(flags, async (c) => exitFor(await follow(c, jobId, !!flags.json)));
    });
  remote(jobs.command('cancel').description('cancel a queued or running job').argument('<job-id>')).action(async (jobId: string, flags: RemoteFlags) => {
    await withClients(flags, async (c) => process.stdout.write(formatJob(await cancelTraining(c, jobId)) + '\n'));
  });
  remote(jobs.command('list').description('all jobs, oldest first'))
    .option('--json', 'print JSON')
    .action(async (flags: RemoteFlags & { json?: boolean }) => {
      await withClients(flags, async (c) => {
        const all = await listTrainingJobs(c);
        process.stdout.write(flags.json ? JSON.stringify(all) + '\n' : all.map((j) => formatJob(j) + '\n').join(''));
      });
    });

  const models = program.command('models').description('model versions on a server');
  remote(models.command('list').description('versions in the repository, the default marked'))
    .option('--json', 'print JSON')
    .action(async (flags: RemoteFlags & { json?: boolean }) => {
      await withClients(flags, async (c) => {
        const all = await listModels(c);
        if (flags.json) return void process.stdout.write(JSON.stringify(all) + '\n');
        for (const m of all) {
          const tags = [m.isDefault ? 'default' : '', m.loaded ? 'loaded' : '', m.trained ? '' : 'UNTRAINED'].filter(Boolean).join(', ');
          process.stdout.write(`${m.name}@${m.version}${tags ? ` (${tags})` : ''}${m.parent ? ` from ${m.parent}` : ''} ${fmtMetrics(m.metrics)}\n`);
        }
      });
    });
  remote(models.command('activate').description('make a version the default on every server sharing the repository (admin role); activating the previous one is the rollback').argument('<name@version>'))
    .action(async (ref: string, flags: RemoteFlags) => {
      const [name, version, ...rest] = ref.split('@');
      if (!name || rest.length > 0) throw new Error(`expected NAME@VERSION or NAME, got ${ref}`);
      await withClients(flags, async (c) => {
        const res = await activateModel(c, name, version ?? '');
        process.stdout.write(`${res.model!.name}@${res.model!.version} is the default (was ${res.previous})\n`);
      });
    });
}
