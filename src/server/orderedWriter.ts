import { EventEmitter, once } from 'node:events';
import type { Writable } from 'node:stream';

/**
 * Writes a stream's answers in the order their tiles arrived, while the tiles themselves are processed
 * concurrently. Honours write backpressure (`drain`) and stops at the first failed answer.
 */
export class OrderedWriter<T> {
  private chain: Promise<void> = Promise.resolve();
  private pending = 0;
  /** Answers written to the call. */
  written = 0;
  private failure: unknown;
  private readonly events = new EventEmitter();

  constructor(
    private readonly out: Writable,
    private readonly signal: AbortSignal,
    private readonly onFailure: (err: unknown) => void,
  ) {}

  /** Answers pushed but not yet written. */
  get size(): number {
    return this.pending;
  }

  push(answer: Promise<T>): void {
    this.pending++;
    answer.catch(() => undefined); // observed below, in order
    this.chain = this.chain.then(async () => {
      try {
        if (this.failure !== undefined || this.signal.aborted) return;
        const value = await answer;
        const more = this.out.write(value);
        this.written++;
        if (!more) await once(this.out, 'drain', { signal: this.signal });
      } catch (err) {
        if (this.failure === undefined && !this.signal.aborted) {
          this.failure = err;
          this.onFailure(err);
        }
      } finally {
        this.pending--;
        this.events.emit('written');
      }
    });
  }

  /** Waits until fewer than n answers are outstanding. */
  async waitBelow(n: number): Promise<void> {
    while (this.pending >= n) {
      if (this.failure !== undefined) throw this.failure;
      await once(this.events, 'written', { signal: this.signal });
    }
  }

  /** Resolves when everything pushed is written; throws the first failure. */
  async finish(): Promise<void> {
    await this.chain;
    if (this.failure !== undefined) throw this.failure;
  }
}
