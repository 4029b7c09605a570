/**
 * CPU turns for the tile path, one per turn of the event loop. A tile's synchronous pixel steps each wait for a turn
 * (`turn()`); the turnstile grants them first come, first served, one per `setImmediate`, so between any two steps the
 * loop polls I/O: a health check, a metrics scrape or another stream's message waits for at most one step, however
 * many tiles are being prepared, rather than for every tile's next step.
 */
export class Turnstile {
  private readonly waiting: (() => void)[] = [];
  private scheduled = false;
  /** Turns granted so far (tests and diagnostics). */
  granted = 0;

  /** Resolves when this caller may run its next synchronous step. */
  turn = (): Promise<void> =>
    new Promise<void>((resolve) => {
      this.waiting.push(resolve);
      this.schedule();
    });

  /** Callers waiting for a turn. */
  get queued(): number {
    return this.waiting.length;
  }

  private schedule(): void {
    if (this.scheduled || this.waiting.length === 0) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      const next = this.waiting.shift();
      if (next) {
        this.granted++;
        next();
      }
      // The next grant comes in the next turn of the loop, after its I/O poll.
      this.schedule();
    });
  }
}
