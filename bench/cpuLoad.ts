// CPU load from other processes during a benchmark, read from /proc as the torch reference's loadmon does.
import { readFileSync } from 'node:fs';

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

/** user + system ticks of one process; NaN when it is gone. */
export function procCpu(pid: number): number {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8').split(')').pop()!.trim().split(/\s+/);
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
