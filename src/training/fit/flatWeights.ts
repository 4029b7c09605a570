import * as tf from '@tensorflow/tfjs';

/** Copies tensors, one after another, into `out` from `offset` (the data-parallel state is flat). */
export async function writeFlat(tensors: readonly tf.Tensor[], out: Float32Array, offset = 0): Promise<void> {
  let o = offset;
  for (const t of tensors) {
    out.set((await t.data()) as Float32Array, o);
    o += t.size;
  }
}

/** New tensors of the given shapes from consecutive runs of `flat` (the caller disposes them). */
export function tensorsFromFlat(flat: Float32Array, shapes: readonly number[][]): tf.Tensor[] {
  let o = 0;
  return shapes.map((shape) => {
    const n = tf.util.sizeFromShape(shape);
    const t = tf.tensor(flat.subarray(o, o + n), shape);
    o += n;
    return t;
  });
}

/** Assigns consecutive runs of `flat` to the variables, in order. */
export function readFlat(flat: Float32Array, into: readonly tf.Variable[]): void {
  tf.tidy(() => tensorsFromFlat(flat, into.map((v) => v.shape)).forEach((t, i) => into[i]!.assign(t)));
}
