import * as tf from '@tensorflow/tfjs';

/** Copies tensors, one after another, into `out` from `offset` (the data-parallel state is flat). */
export async function writeFlat(tensors: readonly tf.Tensor[], out: Float32Array, offset = 0): Promise<void> {
  let o = offset;
  for (const t of tensors) {
    out.set((await t.data()) as Float32Array, o);
    o += t.size;
  }
}

/** Assigns consecutive runs of `flat` to the variables, in order. */
export function readFlat(flat: Float32Array, into: readonly tf.Variable[]): void {
  let o = 0;
  tf.tidy(() => {
    for (const v of into) {
      v.assign(tf.tensor(flat.subarray(o, o + v.size), v.shape));
      o += v.size;
    }
  });
}
