import assert from 'node:assert/strict';
import { availableParallelism } from 'node:os';
import { describe, it } from 'node:test';
import { CONFIG_KEYS, envName, loadConfig } from '../src/server/config.js';

/** Asserts loadConfig fails and the message names every given fragment. */
function rejects(flags: Record<string, unknown>, env: Record<string, string>, ...names: (string | RegExp)[]): void {
  assert.throws(
    () => loadConfig(flags, env),
    (err: Error) => {
      for (const n of names) {
        if (typeof n === 'string') assert.ok(err.message.includes(n), `"${err.message}" should name ${n}`);
        else assert.match(err.message, n);
      }
      return true;
    },
  );
}

describe('loadConfig', () => {
  it('has safe defaults and a frozen result', () => {
    const c = loadConfig({}, {});
    assert.equal(c.host, '127.0.0.1', 'listens on loopback unless told otherwise');
    assert.equal(c.port, 50051);
    assert.equal(c.metricsPort, 9464);
    assert.equal(c.models, 'models');
    assert.equal(c.defaultModel, undefined);
    assert.equal(c.engine, 'onnx');
    assert.equal(c.threads, availableParallelism());
    assert.equal(c.workers, undefined, "unset: the server picks one engine per thread on cpu");
    assert.equal(c.maxBatch, undefined, "unset: the engine table decides (16 on cpu, 64 on a GPU)");
    assert.equal(c.maxDelayMs, 4);
    assert.equal(c.queueCapacity, 256);
    assert.equal(c.streamWindow, 32);
    assert.equal(c.maxMessageBytes, 16 * 1024 * 1024);
    assert.equal(c.stainNormalization, true);
    assert.equal(c.tlsCert, undefined);
    assert.equal(c.tokensFile, undefined);
    assert.equal(c.drainTimeoutS, 25);
    assert.equal(c.logLevel, 'info');
    assert.ok(Object.isFrozen(c));
  });

  it('maps every key to a HISTOSEG_ variable', () => {
    assert.equal(envName('metricsPort'), 'HISTOSEG_METRICS_PORT');
    assert.equal(envName('tlsClientCa'), 'HISTOSEG_TLS_CLIENT_CA');
    assert.equal(new Set(CONFIG_KEYS.map(envName)).size, CONFIG_KEYS.length);
  });

  it('parses HISTOSEG_* variables into typed values', () => {
    const c = loadConfig(
      {},
      {
        HISTOSEG_HOST: '0.0.0.0',
        HISTOSEG_PORT: '6000',
        HISTOSEG_METRICS_PORT: '0',
        HISTOSEG_ENGINE: 'tfjs',
        HISTOSEG_THREADS: '3',
        HISTOSEG_MAX_DELAY_MS: '2.5',
        HISTOSEG_MIN_TISSUE_FRACTION: '0.2',
        HISTOSEG_STAIN_NORMALIZATION: 'no',
        HISTOSEG_TLS_CERT: '/certs/tls.crt',
        HISTOSEG_TLS_KEY: '/certs/tls.key',
        HISTOSEG_LOG_LEVEL: 'debug',
        HISTOSEG_DEFAULT_MODEL: '',
        PATH: '/usr/bin',
      },
    );
    assert.equal(c.host, '0.0.0.0');
    assert.equal(c.port, 6000);
    assert.equal(c.metricsPort, 0);
    assert.equal(c.engine, 'tfjs');
    assert.equal(c.threads, 3);
    assert.equal(c.maxDelayMs, 2.5);
    assert.equal(c.minTissueFraction, 0.2);
    assert.equal(c.stainNormalization, false);
    assert.equal(c.tlsCert, '/certs/tls.crt');
    assert.equal(c.logLevel, 'debug');
    assert.equal(c.defaultModel, undefined, 'an empty variable counts as unset');
    for (const [v, want] of [['true', true], ['1', true], ['yes', true], ['false', false], ['0', false]] as const) {
      assert.equal(loadConfig({}, { HISTOSEG_STAIN_NORMALIZATION: v }).stainNormalization, want, v);
    }
  });

  it('lets flags override the environment', () => {
    const env = { HISTOSEG_PORT: '6000', HISTOSEG_ENGINE: 'tfjs', HISTOSEG_MAX_BATCH: '8', HISTOSEG_WORKERS: '2' };
    // Commander hands over strings; an undefined flag leaves the variable in force.
    const c = loadConfig({ port: '7000', engine: 'onnx', maxBatch: undefined, stainNormalization: false }, env);
    assert.equal(c.port, 7000);
    assert.equal(c.engine, 'onnx');
    assert.equal(c.maxBatch, 8);
    assert.equal(c.workers, 2);
    assert.equal(c.stainNormalization, false);
  });

  it('refuses an unknown HISTOSEG_ variable by name', () => {
    rejects({}, { HISTOSEG_PROT: '6000' }, 'HISTOSEG_PROT', 'HISTOSEG_PORT');
    // Other variables are none of its business.
    assert.equal(loadConfig({}, { HISTOSEGMENT: 'x', MY_HISTOSEG_PORT: '1' }).port, 50051);
  });

  it('refuses bad values, naming the flag and the variable', () => {
    rejects({ port: 70000 }, {}, '--port', 'HISTOSEG_PORT', /65535/);
    rejects({}, { HISTOSEG_PORT: '70000' }, '--port', 'HISTOSEG_PORT');
    rejects({}, { HISTOSEG_PORT: 'http' }, '--port', 'HISTOSEG_PORT');
    rejects({ metricsPort: -1 }, {}, '--metrics-port', 'HISTOSEG_METRICS_PORT');
    rejects({}, { HISTOSEG_ENGINE: 'gpu' }, '--engine', 'HISTOSEG_ENGINE', 'onnx', 'tfjs');
    rejects({ engine: 'gpu' }, {}, '--engine', 'HISTOSEG_ENGINE');
    rejects({ threads: '0' }, {}, '--threads', 'HISTOSEG_THREADS');
    rejects({ minTissueFraction: '1.5' }, {}, '--min-tissue-fraction', 'HISTOSEG_MIN_TISSUE_FRACTION');
    rejects({}, { HISTOSEG_STAIN_NORMALIZATION: 'maybe' }, '--stain-normalization', 'HISTOSEG_STAIN_NORMALIZATION', /true, false/);
    rejects({ logLevel: 'verbose' }, {}, '--log-level', 'HISTOSEG_LOG_LEVEL');
    // Several problems are reported together.
    rejects({ port: 70000, workers: 0 }, {}, '--port', '--workers');
  });

  it('needs the TLS certificate and key together, and TLS for client certificates', () => {
    rejects({ tlsCert: '/c.pem' }, {}, '--tls-key', 'HISTOSEG_TLS_KEY');
    rejects({}, { HISTOSEG_TLS_KEY: '/k.pem' }, '--tls-cert', 'HISTOSEG_TLS_CERT');
    rejects({ tlsClientCa: '/ca.pem' }, {}, '--tls-client-ca', 'HISTOSEG_TLS_CLIENT_CA');
    const c = loadConfig({ tlsCert: '/c.pem', tlsKey: '/k.pem', tlsClientCa: '/ca.pem' }, {});
    assert.equal(c.tlsClientCa, '/ca.pem');
  });
});
