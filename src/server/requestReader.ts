import type { Readable } from 'node:stream';

/** Messages held before the call is paused: a few, so reading overlaps processing without buffering a stream. */
const INBOX = 4;

/**
 * Reads a call's messages one at a time, so the server knows exactly which it has read. `stop` (SIGTERM's drain)
 * pauses the call at once: messages still in the transport are not read, every message already read is handed
 * out, then next() says 'stopped'. A paused call leaves unread messages with HTTP/2 flow control.
 */
export class RequestReader<T> {
  private readonly inbox: T[] = [];
  private ended = false;
  private wake: (() => void) | undefined;
  /** Messages handed out by next(). */
  read = 0;

  constructor(
    private readonly call: Readable,
    private readonly stop: AbortSignal,
    private readonly cancelled: AbortSignal,
  ) {
    call.on('data', (m: T) => {
      this.inbox.push(m);
      if (this.inbox.length >= INBOX || stop.aborted) call.pause();
      this.poke();
    });
    call.on('end', () => {
      this.ended = true;
      this.poke();
    });
    const halt = () => {
      call.pause();
      this.poke();
    };
    stop.addEventListener('abort', halt, { once: true });
    cancelled.addEventListener('abort', () => this.poke(), { once: true });
  }

  private poke(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /** The next message read; 'ended' once the client half-closed and all is read; 'stopped' when reading stopped. */
  async next(): Promise<T | 'ended' | 'stopped'> {
    for (;;) {
      if (this.inbox.length > 0) {
        this.read++;
        return this.inbox.shift()!;
      }
      if (this.ended) return 'ended';
      if (this.stop.aborted || this.cancelled.aborted) return 'stopped';
      if (this.call.isPaused()) this.call.resume();
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }
}
