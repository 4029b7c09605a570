import onnxProto from 'onnx-proto';
import { Tensor } from 'onnxruntime-node';
import { binding, initOrt, type Binding } from 'onnxruntime-node/dist/binding.js';

/**
 * onnxruntime-node's native session, called synchronously. The public `InferenceSession.run` defers every run to a
 * later event-loop turn (setImmediate) and returns a promise, which a TF.js kernel (synchronous by contract) cannot
 * await; the binding underneath it runs in the call and writes into output tensors given as fetches. This file is the
 * one place that leans on that binding (onnxruntime-node is pinned in package.json).
 */

const { onnx } = onnxProto;

export type Graph = onnxProto.onnx.IGraphProto;

/** A float32 view (usually into the wasm heap) and its shape. */
export interface TensorView {
  readonly data: Float32Array;
  readonly dims: readonly number[];
}

/** The opset the conv graphs are written against (ConvTranspose output_padding, Slice/Pad inputs: opset 11+). */
const OPSET = 13;
const IR_VERSION = 7;
/** onnxruntime's NCHWc operators (contrib ops of its CPU provider), opset 1. */
export const NCHWC_DOMAIN = 'com.microsoft.nchwc';

export class SyncSession {
  private readonly session: Binding.InferenceSession;

  constructor(graph: Graph, threads: number) {
    initOrt();
    const bytes = onnx.ModelProto.encode({ irVersion: IR_VERSION, opsetImport: [{ domain: '', version: OPSET }, { domain: NCHWC_DOMAIN, version: 1 }], graph }).finish();
    this.session = new binding.InferenceSession();
    this.session.loadModel(bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.byteLength, {
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      logSeverityLevel: 3,
    });
  }

  /** Runs the graph with the outputs written into the given views; nothing may allocate on their heap meanwhile. */
  run(inputs: Record<string, TensorView>, outputs: Record<string, TensorView>): void {
    const feeds: Record<string, Tensor> = {};
    for (const [name, v] of Object.entries(inputs)) feeds[name] = new Tensor('float32', v.data, v.dims);
    const fetches: Record<string, Tensor> = {};
    for (const [name, v] of Object.entries(outputs)) fetches[name] = new Tensor('float32', v.data, v.dims);
    this.session.run(feeds, fetches, {});
  }

  dispose(): void {
    this.session.dispose();
  }
}

/** Sessions by a key of everything their graph depends on, least recently used dropped past `capacity`. */
export class SessionCache {
  private readonly sessions = new Map<string, SyncSession>();

  constructor(
    private readonly threads: number,
    private readonly capacity = 128,
  ) {}

  get size(): number {
    return this.sessions.size;
  }

  get(key: string, build: () => Graph): SyncSession {
    let s = this.sessions.get(key);
    if (s !== undefined) {
      this.sessions.delete(key);
      this.sessions.set(key, s);
      return s;
    }
    s = new SyncSession(build(), this.threads);
    this.sessions.set(key, s);
    if (this.sessions.size > this.capacity) {
      const [oldest, session] = this.sessions.entries().next().value as [string, SyncSession];
      this.sessions.delete(oldest);
      session.dispose();
    }
    return s;
  }

  clear(): void {
    for (const s of this.sessions.values()) s.dispose();
    this.sessions.clear();
  }
}
