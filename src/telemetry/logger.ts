import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * JSON logs. Tiles are patient data: no image bytes, tile ids or slide coordinates are ever logged, and the
 * redaction below is a second line of defence should a request object slip into a log call.
 */
export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { service: 'histoseg', pid: process.pid },
      redact: {
        paths: ['image', '*.image', 'tile', '*.tile', 'mask', '*.mask', 'tileId', '*.tileId', 'authorization', '*.authorization', 'token'],
        censor: '[redacted]',
      },
      serializers: { err: pino.stdSerializers.err },
    },
    destination as pino.DestinationStream | undefined,
  );
}
