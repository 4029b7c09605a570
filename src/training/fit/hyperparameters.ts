// The paper's training numbers (Sec. 2.3, 3.3), each named once; the rest are ours and say so.

/** Adam learning rate (Sec. 2.3). */
export const ADAM_LEARNING_RATE = 1e-4;
/** Adam beta1 (Sec. 2.3). */
export const ADAM_BETA1 = 0.9;
/** Adam beta2 (Sec. 2.3). */
export const ADAM_BETA2 = 0.999;
/** Adam epsilon: the paper gives none; PyTorch's default. */
export const ADAM_EPSILON = 1e-8;
/** Batch size (Sec. 2.3). */
export const BATCH_SIZE = 20;
/** Epochs of every run (Sec. 3.3); the best one is picked on the validation WSI. */
export const EPOCHS = 100;
/**
 * Upper clip of a class weight N / (C n_c) before normalisation: not from the paper. A class with very few (or no)
 * training pixels would otherwise get a weight large enough to swamp the loss.
 */
export const CLASS_WEIGHT_MAX = 10;
/** Windows per forward pass when segmenting the validation slides (memory only; not from the paper). */
export const VALIDATION_BATCH = 16;
