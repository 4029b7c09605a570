// DICOM test fixtures made on the spot by Orthanc's WSI dicomizer (Debian orthanc-wsi): from the real SVS when
// ../shared is laid beside the checkout, else from a synthetic slide (src/synth) written as a pyramidal TIFF, so no
// test depends on ../shared. Tests needing a Debian tool skip with the reason when it is missing, except under
// CI=true, where the tool must be there (.ci/install-dicom.sh).
import { execFile, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { TestContext } from 'node:test';
import { renderSynthSlide, SYNTH_MPP } from '../../src/synth/slides.js';
import { encodeSlideTiff } from '../../src/synth/dataset.js';
import { haveSlide, SVS_MPP, SVS_PATH } from './slideTiles.js';

const run = promisify(execFile);

export const LIBOPENSLIDE = '/usr/lib/x86_64-linux-gnu/libopenslide.so.0';

export function haveTool(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`]).status === 0;
}

/** True when the tools are there; else skips the test (or fails it under CI=true) naming the Debian package. */
export function needTools(t: TestContext, tools: Record<string, string>): boolean {
  const missing = Object.entries(tools).filter(([tool]) => !haveTool(tool) && !existsSync(tool));
  if (missing.length === 0) return true;
  const why = `missing ${missing.map(([tool, pkg]) => `${tool} (apt-get install ${pkg})`).join(', ')}; .ci/install-dicom.sh installs them`;
  if (process.env.CI === 'true') throw new Error(`CI=true: ${why}`);
  t.skip(why);
  return false;
}

export const DICOMIZER = { OrthancWSIDicomizer: 'orthanc-wsi' };

export interface FixtureSource {
  path: string;
  width: number;
  height: number;
  mpp: number;
  /** Needs OpenSlide to read (an SVS). */
  openslide: boolean;
  real: boolean;
}

/** The slide the DICOM fixtures are made from: the real SVS when present, else a synthetic pyramidal TIFF. */
export async function fixtureSource(dir: string): Promise<FixtureSource> {
  if (haveSlide) return { path: SVS_PATH, width: 2220, height: 2967, mpp: SVS_MPP, openslide: true, real: true };
  const slide = renderSynthSlide(7, 640, 480);
  const path = join(dir, 'synth.tif');
  await writeFile(path, await encodeSlideTiff(slide));
  return { path, width: slide.width, height: slide.height, mpp: SYNTH_MPP, openslide: false, real: false };
}

/**
 * Dicomizes the source into `out` (one file per level). The imaged volume is the slide's true size, so the pixel
 * spacing is right; the dicomizer's width runs along the slide's X axis, which is the image's rows (orientation
 * 0\-1\0\-1\0\0), hence height first.
 */
export async function dicomize(src: FixtureSource, out: string, compression: 'jpeg' | 'jpeg2000', opts: { pyramid?: boolean } = {}): Promise<string> {
  await mkdir(out, { recursive: true });
  const args = [
    '--folder', out,
    '--compression', compression,
    '--imaged-width', String((src.height * src.mpp) / 1000),
    '--imaged-height', String((src.width * src.mpp) / 1000),
  ];
  if (src.openslide) args.push('--openslide', LIBOPENSLIDE);
  if (compression !== 'jpeg' || opts.pyramid) args.push('--reencode', '1');
  if (opts.pyramid) args.push('--pyramid', '1');
  await run('OrthancWSIDicomizer', [...args, src.path], { maxBuffer: 16 << 20 });
  return out;
}

/** dciodvfy's errors (lines starting "Error"), its whole output for the message. */
export async function dciodvfy(path: string): Promise<{ errors: string[]; output: string }> {
  const r = spawnSync('dciodvfy', [path], { encoding: 'utf8' });
  const output = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  return { errors: output.split('\n').filter((l) => l.startsWith('Error')), output };
}

/** One attribute's value as dcmdump prints it ("[...]" stripped), or undefined. */
export async function dcmdumpValue(path: string, tag: string): Promise<string | undefined> {
  const { stdout } = await run('dcmdump', ['-q', path], { maxBuffer: 64 << 20 });
  // Top-level only: the full dump indents nested items.
  const line = stdout.split('\n').find((l) => l.startsWith(`(${tag.toLowerCase()})`));
  if (!line) return undefined;
  const m = /\) [A-Z]{2} (?:\[([^\]]*)\]|(\S+))/.exec(line);
  return m ? (m[1] ?? m[2]) : undefined;
}
