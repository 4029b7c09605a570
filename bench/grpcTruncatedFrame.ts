// Reproduces a known grpc-js issue (docs/known-issues.md): a client stream whose final DATA frame carries a
// truncated gRPC message together with END_STREAM. The server should fail the call (the message is incomplete);
// grpc-js drops the partial message, ends the request stream normally, and the call ends OK, so the last message
// vanishes without an error. Run: npx tsx bench/grpcTruncatedFrame.ts (prints JSON; exit code 0 either way).
import { connect, constants } from 'node:http2';
import { Server, ServerCredentials, type ServerDuplexStream, type ServiceDefinition } from '@grpc/grpc-js';

const identity = (b: Buffer) => b;
const service: ServiceDefinition = {
  echo: {
    path: '/repro.Echo/Echo',
    requestStream: true,
    responseStream: true,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};

/** A gRPC length-prefixed message: flag byte 0, 4-byte big-endian length, payload. */
function frame(payload: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}

export async function reproduce(): Promise<{ grpcJs: string; serverReceived: number; answers: number; grpcStatus: string | undefined; lostSilently: boolean }> {
  const received: Buffer[] = [];
  const server = new Server();
  server.addService(service, {
    echo: (call: ServerDuplexStream<Buffer, Buffer>) => {
      call.on('data', (m: Buffer) => {
        received.push(m);
        call.write(m);
      });
      call.on('end', () => call.end());
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  const session = connect(`http://127.0.0.1:${port}`);
  const req = session.request({
    [constants.HTTP2_HEADER_METHOD]: 'POST',
    [constants.HTTP2_HEADER_PATH]: '/repro.Echo/Echo',
    'content-type': 'application/grpc',
    te: 'trailers',
  });
  let answers = 0;
  let grpcStatus: string | undefined;
  req.on('data', (chunk: Buffer) => {
    // Each echo is a 5-byte prefix + 4-byte payload in this script.
    answers += Math.floor(chunk.length / 9);
  });
  req.on('trailers', (t) => (grpcStatus = String(t['grpc-status'])));
  const done = new Promise<void>((resolve) => req.on('close', () => resolve()));
  const whole = frame(Buffer.from('one!'));
  // The second message says 4 payload bytes and carries 2; END_STREAM comes with it.
  const truncated = frame(Buffer.from('tw!!')).subarray(0, 7);
  req.write(whole);
  req.end(truncated);
  await done;
  session.close();
  server.forceShutdown();
  const { version } = (await import('@grpc/grpc-js/package.json', { with: { type: 'json' } })).default as { version: string };
  return { grpcJs: version, serverReceived: received.length, answers, grpcStatus, lostSilently: grpcStatus === '0' };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await reproduce();
  process.stdout.write(JSON.stringify(r) + '\n');
  process.stdout.write(r.lostSilently ? 'the truncated final message was dropped and the call ended OK (the known issue)\n' : `the call ended with grpc-status ${r.grpcStatus} (the issue is fixed in this grpc-js)\n`);
}
