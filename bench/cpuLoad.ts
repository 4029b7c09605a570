// CPU load from other processes during a benchmark, read from /proc as the torch reference's loadmon does.
import { readdirSync, readFileSync } from 'node:fs';

/** Clock ticks per second of /proc's CPU times (USER_HZ; 100 on Linux). */
export const HZ = 100;

export interface CpuSnap {
  /** Seconds (performance.now). */
  t: number;
  /** Busy ticks of the whole machine. */
  busy: number;
  /** Ticks used by the processes measured. */
  own: number;
}

/** user + system ticks of one process (or, given its stat file, one thread); NaN when it is gone. */
export function procCpu(pid: number, statFile = `/proc/${pid}/stat`): number {
  try {
    const s = readFileSync(statFile, 'utf8').split(')').pop()!.trim().split(/\s+/);
    return Number(s[11]) + Number(s[12]);
  } catch {
    return NaN;
  }
}

export function cpuSnap(pids: readonly number[]): CpuSnap {
  const v = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.split(/\s+/).slice(1).map(Number);
  const busy = v[0]! + v[1]! + v[2]! + v[5]! + v[6]! + v[7]!;
  let own = 0;
  for (const pid of pids) {
    const ticks = procCpu(pid);
    if (Number.isFinite(ticks)) own += ticks; // a process that is gone adds nothing
  }
  return { t: performance.now() / 1000, busy, own };
}

/** Cores used by processes other than ours between two snapshots. */
export const foreign = (a: CpuSnap, b: CpuSnap): number => Math.max(0, (b.busy - a.busy - (b.own - a.own)) / HZ / (b.t - a.t));

/** user + system ticks of each thread of a process, by thread id. */
export function threadCpu(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  let tids: string[] = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    const ticks = procCpu(Number(tid), `/proc/${pid}/task/${tid}/stat`);
    if (Number.isFinite(ticks)) out.set(Number(tid), ticks);
  }
  return out;
}

/**
 * Where a process's CPU went between two threadCpu snapshots, in ticks: its main thread, its `engines` busiest
 * other threads (the engine workers, whose single-threaded sessions run on the worker's own thread), and the rest
 * (V8's GC and compiler threads, libuv, loaders).
 */
export function splitThreads(pid: number, a: Map<number, number>, b: Map<number, number>, engines: number): { main: number; engine: number; other: number } {
  const used = [...b].map(([tid, t]) => [tid, t - (a.get(tid) ?? 0)] as const);
  const main = used.find(([tid]) => tid === pid)?.[1] ?? 0;
  const rest = used.filter(([tid]) => tid !== pid).map(([, t]) => t).sort((x, y) => y - x);
  const engine = rest.slice(0, engines).reduce((s, t) => s + t, 0);
  const other = rest.slice(engines).reduce((s, t) => s + t, 0);
  return { main, engine, other };
}

/** The widest float vector instructions the CPU reports (machines here have varied between AVX-512 and AVX2). */
export function vectorIsa(): string {
  let flags: string[] = [];
  try {
    flags = (/^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '').trim().split(/\s+/);
  } catch {
    return 'unknown vector ISA';
  }
  if (flags.includes('avx512f')) return 'AVX-512';
  if (flags.includes('avx2')) return flags.includes('fma') ? 'AVX2 + FMA, no AVX-512' : 'AVX2, no AVX-512';
  return 'no AVX2';
}
