/**
 * Recycles the tile path's byte buffers by size. Every fresh backing store counts toward V8's external-memory
 * trigger, and at 300 tiles/s the tile path's ~0.5 MB of buffers per tile forced a full mark-compact about every
 * 200 ms (measured with --trace-gc). Buffers come back with old contents: whoever acquires one writes all of it.
 */
export class BytePool {
  private readonly free = new Map<number, Uint8Array[]>();
  /** What the pool holds now: a second release of one buffer would hand it to two tiles at once. */
  private readonly pooled = new WeakSet<Uint8Array>();

  private heldBytes = 0;

  /**
   * What an idle pool may hold: maxPerSize buffers of one size (enough for the tiles a server has in flight),
   * maxSizes sizes, and maxBytes in all, so a burst of large tiles cannot pin their memory for good.
   */
  constructor(
    private readonly maxPerSize = 512,
    private readonly maxSizes = 16,
    private readonly maxBytes = 64 * 1024 * 1024,
  ) {}

  acquire(length: number): Uint8Array {
    const buf = this.free.get(length)?.pop();
    if (!buf) return new Uint8Array(length);
    this.pooled.delete(buf);
    this.heldBytes -= buf.byteLength;
    return buf;
  }

  /** Hands a buffer back; views into larger buffers are ignored, since their memory is not theirs to give. */
  release(buf: Uint8Array | undefined): void {
    if (!buf || buf.byteOffset !== 0 || buf.byteLength !== buf.buffer.byteLength || buf.buffer.byteLength === 0) return;
    if (this.pooled.has(buf)) throw new Error('BytePool: buffer released twice');
    if (this.heldBytes + buf.byteLength > this.maxBytes) return;
    let list = this.free.get(buf.length);
    if (!list) {
      if (this.free.size >= this.maxSizes) return;
      list = [];
      this.free.set(buf.length, list);
    }
    if (list.length < this.maxPerSize) {
      list.push(buf);
      this.pooled.add(buf);
      this.heldBytes += buf.byteLength;
    }
  }

  /** Bytes held, over all sizes. */
  get bytes(): number {
    return this.heldBytes;
  }

  /** Buffers held, over all sizes. */
  get held(): number {
    let n = 0;
    for (const l of this.free.values()) n += l.length;
    return n;
  }
}
