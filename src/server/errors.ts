import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { InvalidModelRefError, ModelNotFoundError } from '../model/repository.js';
import { EngineUnavailableError } from '../engine/workerPool.js';
import { BatcherStoppedError } from '../pipeline/batcher.js';
import { DatasetError, DatasetNotFoundError, StoreLimitError } from '../data/examples/exampleStore.js';
import { JobFinishedError, JobNotFoundError, JobQueueFullError } from '../training/jobs/jobManager.js';
import type { Logger } from '../telemetry/logger.js';
import type { Metrics } from '../telemetry/metrics.js';

/** A domain failure with the gRPC status it maps to; the message goes to the client as the status details. */
export class StatusError extends Error {
  constructor(
    readonly code: status,
    message: string,
  ) {
    super(message);
  }

  toServiceError(): Partial<ServiceError> {
    return { code: this.code, details: this.message, metadata: new Metadata() };
  }
}

export const invalidArgument = (msg: string) => new StatusError(status.INVALID_ARGUMENT, msg);
export const notFound = (msg: string) => new StatusError(status.NOT_FOUND, msg);
export const resourceExhausted = (msg: string) => new StatusError(status.RESOURCE_EXHAUSTED, msg);
export const unavailable = (msg: string) => new StatusError(status.UNAVAILABLE, msg);
export const unauthenticated = (msg: string) => new StatusError(status.UNAUTHENTICATED, msg);
export const permissionDenied = (msg: string) => new StatusError(status.PERMISSION_DENIED, msg);

/** Where toStatus reports a failed RPC: every non-OK status is logged and counted. */
export interface StatusReport {
  readonly log: Logger;
  readonly metrics?: Metrics;
  /** The RPC, as `Service/Method`. */
  readonly method: string;
}

/**
 * The one mapping from anything thrown to a gRPC status. StatusErrors keep theirs; the domain errors of the
 * floors below map to their codes; anything else is our bug: INTERNAL to the client, without internals, and
 * logged with its stack. Given a report, every failure is logged (at error level for INTERNAL, info otherwise)
 * and counted in histoseg_rpc_errors_total{code, method}.
 */
export function toStatus(err: unknown, report?: StatusReport): StatusError {
  let s: StatusError;
  let bug = false;
  if (err instanceof StatusError) s = err;
  else if (err instanceof ModelNotFoundError) s = notFound(err.message);
  else if (err instanceof InvalidModelRefError) s = invalidArgument(err.message);
  else if (err instanceof DatasetNotFoundError || err instanceof JobNotFoundError) s = notFound(err.message);
  else if (err instanceof DatasetError) s = invalidArgument(err.message);
  else if (err instanceof StoreLimitError || err instanceof JobQueueFullError) s = resourceExhausted(err.message);
  else if (err instanceof JobFinishedError) s = new StatusError(status.FAILED_PRECONDITION, err.message);
  else if (err instanceof BatcherStoppedError || err instanceof EngineUnavailableError) s = unavailable(err.message);
  else {
    s = new StatusError(status.INTERNAL, 'internal error');
    bug = true;
  }
  if (report) {
    const code = status[s.code] ?? String(s.code);
    report.metrics?.requestErrors.inc({ code: String(s.code), method: report.method });
    if (bug) report.log.error({ err, method: report.method }, `${report.method} failed: internal error`);
    else report.log.info({ method: report.method, code, reason: s.message }, `${report.method} failed: ${code}`);
  }
  return s;
}
