import { Metadata, status, type ServiceError } from '@grpc/grpc-js';

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

/** Maps anything thrown to a status: StatusErrors keep theirs, the rest become INTERNAL without internals. */
export function toStatus(err: unknown): StatusError {
  if (err instanceof StatusError) return err;
  return new StatusError(status.INTERNAL, 'internal error');
}
