/** Maps an async sequence in order, with up to `ahead` calls of `fn` started before their results are taken. */
export async function* mapAhead<T, U>(source: AsyncIterable<T> | Iterable<T>, fn: (value: T) => Promise<U>, ahead: number): AsyncGenerator<U> {
  if (!Number.isInteger(ahead) || ahead < 1) throw new RangeError(`ahead must be a positive integer, got ${ahead}`);
  const started: Promise<U>[] = [];
  const it = (Symbol.asyncIterator in source ? source[Symbol.asyncIterator]() : (source as Iterable<T>)[Symbol.iterator]()) as
    | AsyncIterator<T>
    | Iterator<T>;
  let finished = false;
  const pull = async (): Promise<boolean> => {
    if (finished) return false;
    const r = await it.next();
    if (r.done) {
      finished = true;
      return false;
    }
    const p = fn(r.value);
    p.catch(() => undefined); // awaited below, in order
    started.push(p);
    return true;
  };
  try {
    while (started.length < ahead && (await pull()));
    while (started.length > 0) {
      const value = await started.shift()!;
      await pull();
      yield value;
    }
  } finally {
    if (!finished) await it.return?.();
  }
}
