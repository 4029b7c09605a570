/** Names of the ONNX graph's inputs and outputs, as the PyTorch reference exports them (export_onnx.py). */
export const ONNX_INPUT = 'input';
export const ONNX_OUTPUTS = { mask: 'mask', cls: 'cls' } as const;
