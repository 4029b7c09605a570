import type { Metadata } from '@grpc/grpc-js';
import type { Logger } from '../telemetry/logger.js';
import type { Metrics } from '../telemetry/metrics.js';
import type { Role, TokenAuth } from './auth.js';
import type { StatusError } from './errors.js';

export interface AuthGuardOptions {
  /** Failed checks a peer may make before its checks are slowed down. */
  readonly freeFailures: number;
  /** The delay of the first slowed-down check; it doubles with each further failure, up to maxDelayMs. */
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  /** A peer's failures are forgotten this long after its last one. */
  readonly forgetAfterMs: number;
  /** Peers remembered at once; the least recently failed are forgotten first. */
  readonly maxPeers: number;
}

export const AUTH_GUARD_DEFAULTS: AuthGuardOptions = { freeFailures: 5, baseDelayMs: 100, maxDelayMs: 5000, forgetAfterMs: 10 * 60_000, maxPeers: 10_000 };

interface PeerState {
  failures: number;
  lastFailure: number;
  /** No check of this peer is answered before this time: parallel guesses queue behind each other. */
  notBefore: number;
}

/** The address of a gRPC peer without its port ("10.0.0.1:5123" -> "10.0.0.1", "[::1]:5123" -> "[::1]"). */
export function peerAddress(peer: string): string {
  const bracket = /^(.*\[[^\]]*\]):\d+$/.exec(peer);
  if (bracket) return bracket[1]!;
  const colons = peer.split(':').length - 1;
  if (colons === 1 || (colons === 2 && /^ipv4:/.test(peer))) return peer.replace(/:\d+$/, '');
  return peer;
}

/**
 * Token checks for every service, with what a brute force needs to be seen and slowed: each failure is logged
 * (peer address, RPC, reason; never the token) and counted in histoseg_auth_failures_total{method, reason}; after
 * `freeFailures` failures a peer's checks are answered no sooner than an exponentially growing delay after its
 * previous one, whatever the token, until it stops failing. A success forgets the peer's failures.
 */
export class AuthGuard {
  private readonly peers = new Map<string, PeerState>();

  constructor(
    private readonly auth: TokenAuth,
    private readonly log: Logger,
    private readonly metrics: Metrics | undefined,
    private readonly opts: AuthGuardOptions = AUTH_GUARD_DEFAULTS,
    private readonly clock: { now(): number; sleep(ms: number): Promise<void> } = {
      now: () => Date.now(),
      sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    },
  ) {}

  /** null when the call may proceed; else the status to end it with. */
  async check(call: { metadata: Metadata; getPeer(): string }, need: Role, method: string): Promise<StatusError | null> {
    const peer = peerAddress(call.getPeer());
    const now = this.clock.now();
    let state = this.peers.get(peer);
    if (state && now - state.lastFailure > this.opts.forgetAfterMs) {
      this.peers.delete(peer);
      state = undefined;
    }
    if (state && state.notBefore > now) await this.clock.sleep(state.notBefore - now);
    const denied = this.auth.check(call.metadata, need);
    if (!denied) {
      if (state) this.peers.delete(peer);
      return null;
    }
    const at = this.clock.now();
    if (!state) {
      state = { failures: 0, lastFailure: at, notBefore: 0 };
      if (this.peers.size >= this.opts.maxPeers) this.peers.delete(this.peers.keys().next().value!);
    }
    // Re-inserted, so the map's order is least recently failed first.
    this.peers.delete(peer);
    this.peers.set(peer, state);
    state.failures++;
    state.lastFailure = at;
    const over = state.failures - this.opts.freeFailures;
    const delay = over > 0 ? Math.min(this.opts.maxDelayMs, this.opts.baseDelayMs * 2 ** Math.min(over - 1, 30)) : 0;
    if (delay > 0) state.notBefore = Math.max(at, state.notBefore) + delay;
    const reason = denied.code === 7 ? 'permission' : /missing/.test(denied.message) ? 'missing' : 'unknown-token';
    this.metrics?.authFailures.inc({ method, reason });
    this.log.warn({ peer, method, reason, failures: state.failures, delayMs: delay }, 'authentication failed');
    return denied;
  }

  /** The delay a peer's next check waits (tests and diagnostics). */
  pendingDelayMs(peer: string): number {
    const s = this.peers.get(peerAddress(peer));
    return s ? Math.max(0, s.notBefore - this.clock.now()) : 0;
  }
}
