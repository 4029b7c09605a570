/** Names of the ONNX graph's inputs and outputs, as the PyTorch reference exports them (export_onnx.py). */
export const ONNX_INPUT = 'input';
export const ONNX_OUTPUTS = { mask: 'mask', cls: 'cls' } as const;
/** The decoder's 16x16 logits before nearest upsampling: serving fetches these, 64x less data than "mask". */
export const ONNX_SEG16 = 'seg16';
