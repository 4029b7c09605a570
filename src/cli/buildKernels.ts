// `npm run build:kernels`: compiles the AssemblyScript pixel kernels into src/imaging/kernels/pixelKernelsWasm.ts.
import { writeKernelsModule } from '../imaging/kernels/buildKernels.js';

const { path, bytes } = await writeKernelsModule();
process.stdout.write(`wrote ${path} (${bytes} bytes of WebAssembly)\n`);
