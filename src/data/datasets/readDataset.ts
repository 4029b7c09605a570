import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { looksLikeBach, readBachDataset } from './bachLayout.js';
import { CLASSES_TXT, type Dataset, readGenericDataset } from './dataset.js';

/** Reads a dataset folder: the generic layout when it has classes.txt, else the BACH layout (Photos/, WSI/). */
export async function readDataset(root: string): Promise<Dataset> {
  const isDir = await stat(root).then(
    (s) => s.isDirectory(),
    () => false,
  );
  if (!isDir) throw new Error(`dataset folder ${root} does not exist`);
  const hasClasses = await stat(join(root, CLASSES_TXT)).then(
    () => true,
    () => false,
  );
  if (!hasClasses && (await looksLikeBach(root))) return readBachDataset(root);
  return readGenericDataset(root);
}
