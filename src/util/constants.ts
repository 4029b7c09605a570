// Numbers fixed by the paper ("Learning to segment images with classification labels"); see ../shared/docs/paper.md.

/** Side of the square model input, in pixels (Sec. 2.2, Appendix A; patch side D, Appendix B). */
export const INPUT_SIZE = 128;
/** Side of the decoder output before nearest interpolation to INPUT_SIZE (Table A.1). */
export const SEG16_SIZE = 16;
/** Channels of the decoder's hidden 3x3 conv (Table A.1). */
export const DECODER_CHANNELS = 64;
/** Channels of the classifier's hidden 1x1 conv (Table A.2). */
export const CLASSIFIER_CHANNELS = 8;
/** Channels of ResNet-18 layer3, where the encoder is cut (Sec. 2.2). */
export const ENCODER_CHANNELS = 256;
/** Batch-norm epsilon of PyTorch/torchvision, so imported ImageNet weights mean the same (not Keras's 1e-3). */
export const BN_EPSILON = 1e-5;
/** Microns per pixel at the paper's 1.25X inference magnification (BACH WSIs: 0.467 um/px at 20X, /16). */
export const MODEL_MPP = 7.5;
/** ImageNet statistics of the torchvision encoder's input normalisation. */
export const IMAGENET_MEAN = [0.485, 0.456, 0.406] as const;
export const IMAGENET_STD = [0.229, 0.224, 0.225] as const;
/** Batch-norm momentum in Keras terms (moving = m * moving + (1 - m) * batch): PyTorch's default momentum 0.1. */
export const BN_MOMENTUM = 0.9;
/** BACH classes, label = index, with the paper's display colours (paper.md "Task"). */
export const BACH_CLASSES = [
  { name: 'normal', color: '#ffffff' },
  { name: 'benign', color: '#ff0000' },
  { name: 'in situ', color: '#00ff00' },
  { name: 'invasive', color: '#0000ff' },
] as const;
