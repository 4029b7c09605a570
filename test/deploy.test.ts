import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse, parseAllDocuments } from 'yaml';
import { CONFIG_KEYS, envName, loadConfig } from '../src/server/config.js';
import { ENGINE_KINDS } from '../src/engine/engine.js';
import { SERVE_NODE_FLAGS } from '../src/cli/serveCommand.js';

/**
 * Static checks of the Dockerfile and the Helm chart; there is no Docker engine or helm here. When a helm binary is
 * on PATH (or in $HELM), the chart is also rendered and the result checked against the server's config parser.
 */

const root = fileURLToPath(new URL('..', import.meta.url));
const chartDir = join(root, 'helm', 'histoseg');
const templatesDir = join(chartDir, 'templates');

const read = (...parts: string[]) => readFileSync(join(root, ...parts), 'utf8');
type Tree = Record<string, unknown>;
const values = parse(read('helm/histoseg/values.yaml')) as Tree;
const chart = parse(read('helm/histoseg/Chart.yaml')) as Tree;
const templates = new Map(readdirSync(templatesDir).map((f) => [f, readFileSync(join(templatesDir, f), 'utf8')] as const));
const allTemplates = [...templates.values()].join('\n');
const dockerfile = read('Dockerfile');

/** Every variable the server accepts; it refuses any other HISTOSEG_* name at start. */
const knownEnv = new Set(CONFIG_KEYS.map(envName));
const ports = values.ports as { grpc: number; metrics: number };

function lookup(tree: unknown, path: string[]): { found: boolean; value: unknown } {
  let node = tree;
  for (const key of path) {
    if (node === null || typeof node !== 'object' || !(key in node)) return { found: false, value: undefined };
    node = (node as Tree)[key];
  }
  return { found: true, value: node };
}

/** HISTOSEG_* names set in a template or Dockerfile; template comments and whole-line `#` comments do not count. */
function envNamesIn(text: string): string[] {
  const code = text.replace(/\{\{-?\s*\/\*[\s\S]*?\*\/\s*-?\}\}/g, '').replace(/^\s*#.*$/gm, '');
  return [...new Set(code.match(/\bHISTOSEG_[A-Z0-9_]+/g) ?? [])];
}

/** The Dockerfile split into stages, continuation lines joined. */
function dockerStages(): { from: string; name: string | undefined; lines: string[] }[] {
  const joined = dockerfile.replace(/\\\r?\n/g, ' ');
  const stages: { from: string; name: string | undefined; lines: string[] }[] = [];
  for (const raw of joined.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const from = /^FROM\s+(\S+)(?:\s+AS\s+(\S+))?/i.exec(line);
    if (from) stages.push({ from: from[1], name: from[2], lines: [] });
    else stages.at(-1)?.lines.push(line);
  }
  return stages;
}

test('Chart.yaml and values.yaml parse, and the chart tracks the package version', () => {
  assert.equal(chart.apiVersion, 'v2');
  assert.equal(chart.name, 'histoseg');
  assert.match(String(chart.version), /^\d+\.\d+\.\d+/);
  const pkg = JSON.parse(read('package.json')) as { version: string };
  assert.equal(chart.appVersion, pkg.version, 'appVersion is the default image tag: keep it equal to package.json');
  assert.ok(Number.isInteger(ports.grpc) && Number.isInteger(ports.metrics), 'ports.grpc and ports.metrics are numbers');
  assert.notEqual(ports.grpc, ports.metrics);
  assert.ok((ENGINE_KINDS as readonly string[]).includes((values.config as Tree).engine as string), 'config.engine is a known engine');
});

test('every .Values path the templates use exists in values.yaml', () => {
  const used = new Set<string>();
  for (const m of allTemplates.matchAll(/\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)/g)) used.add(m[1].slice(1));
  assert.ok(used.size > 30, `found only ${used.size} .Values paths; is the scan broken?`);
  const missing = [...used].filter((p) => !lookup(values, p.split('.')).found);
  assert.deepEqual(missing, [], `paths used in templates but absent from values.yaml: ${missing.join(', ')}`);
});

test('no port number is written in a template: they come from .Values.ports', () => {
  for (const [file, text] of templates) {
    for (const port of [ports.grpc, ports.metrics]) {
      assert.doesNotMatch(text, new RegExp(`\\b${port}\\b`), `${file} repeats port ${port}`);
    }
    assert.doesNotMatch(text, /\b(containerPort|port|targetPort):\s*\d+/, `${file} has a literal port`);
  }
  assert.match(templates.get('service.yaml') ?? '', /port: \{\{ \.Values\.ports\.grpc \}\}/);
  assert.match(templates.get('service.yaml') ?? '', /port: \{\{ \.Values\.ports\.metrics \}\}/);
  assert.match(templates.get('configmap.yaml') ?? '', /HISTOSEG_PORT: .*\.Values\.ports\.grpc/);
  assert.match(templates.get('configmap.yaml') ?? '', /HISTOSEG_METRICS_PORT: .*\.Values\.ports\.metrics/);
});

test('the pod is locked down', () => {
  const pod = values.podSecurityContext as Tree;
  const container = values.securityContext as Tree;
  assert.equal(pod.runAsNonRoot, true);
  assert.ok(Number(pod.runAsUser) > 0, 'runAsUser is not root');
  assert.deepEqual(pod.seccompProfile, { type: 'RuntimeDefault' });
  assert.equal(container.runAsNonRoot, true);
  assert.equal(container.readOnlyRootFilesystem, true);
  assert.equal(container.allowPrivilegeEscalation, false);
  assert.deepEqual((container.capabilities as Tree).drop, ['ALL']);
  assert.deepEqual(container.seccompProfile, { type: 'RuntimeDefault' });
  const deployment = templates.get('deployment.yaml') ?? '';
  assert.match(deployment, /toYaml \.Values\.podSecurityContext/);
  assert.equal(deployment.match(/toYaml \.Values\.securityContext/g)?.length, 2, 'server and init container both locked down');
  assert.match(deployment, /- name: tmp\s+mountPath: \/tmp/, 'a writable /tmp on a read-only root');
  assert.match(deployment, /name: tmp\s+emptyDir:/);
  assert.match(deployment, /enableServiceLinks: false/, 'service links would inject HISTOSEG_SERVICE_HOST, which the server refuses');
  assert.match(deployment, /automountServiceAccountToken: false/);
});

test('every HISTOSEG_* variable the chart and the image set is one the server knows', () => {
  const chartEnv = envNamesIn(allTemplates);
  assert.ok(chartEnv.includes('HISTOSEG_HOST') && chartEnv.includes('HISTOSEG_THREADS'));
  assert.deepEqual(chartEnv.filter((n) => !knownEnv.has(n)), [], 'unknown names in the chart');
  const imageEnv = envNamesIn(dockerfile);
  assert.deepEqual(imageEnv.filter((n) => !knownEnv.has(n)), [], 'unknown names in the Dockerfile');
  assert.match(templates.get('configmap.yaml') ?? '', /HISTOSEG_HOST: "0\.0\.0\.0"/);
});

test('probes: gRPC health for readiness, HTTP /healthz for liveness; grace period above the drain timeout', () => {
  const helpers = templates.get('_helpers.tpl') ?? '';
  const deployment = templates.get('deployment.yaml') ?? '';
  assert.match(helpers, /grpc:\s+port: \{\{ \.Values\.ports\.grpc \}\}/);
  assert.match(helpers, /path: \/readyz/, 'HTTP readiness where the kubelet cannot probe gRPC over TLS');
  assert.match(deployment, /livenessProbe:\s+httpGet:\s+path: \/healthz\s+port: metrics/);
  assert.match(deployment, /readinessProbe:\s+\{\{- include "histoseg\.readinessProbe"/);
  const shutdown = values.shutdown as Record<string, number>;
  assert.ok(shutdown.extraGraceSeconds > 0 && shutdown.drainTimeoutSeconds > 0);
  assert.match(helpers, /add \(int \.Values\.shutdown\.preStopSleepSeconds\) \(int \.Values\.shutdown\.drainTimeoutSeconds\) \(int \.Values\.shutdown\.extraGraceSeconds\)/);
  assert.match(templates.get('configmap.yaml') ?? '', /HISTOSEG_DRAIN_TIMEOUT_S: .*\.Values\.shutdown\.drainTimeoutSeconds/);
});

test('optional resources are off by default, and the threads follow the CPU resources', () => {
  assert.equal((values.autoscaling as Tree).enabled, false);
  assert.equal((values.serviceMonitor as Tree).enabled, false);
  assert.match(templates.get('hpa.yaml') ?? '', /^\{\{- if \.Values\.autoscaling\.enabled \}\}/);
  assert.match(templates.get('servicemonitor.yaml') ?? '', /^\{\{- if \.Values\.serviceMonitor\.enabled \}\}/);
  const resources = values.resources as { requests: Tree; limits: Tree };
  assert.ok(resources.requests.cpu && resources.requests.memory, 'CPU and memory requests are set');
  assert.equal((values.config as Tree).threads, null, 'threads default to the CPU limit');
  assert.match(templates.get('_helpers.tpl') ?? '', /resourceFieldRef:\s+resource: \{\{ \$cpu \}\}\s+divisor: "1"/);
});

test('the Dockerfile is multi-stage, runs as a non-root user and ships what the server loads', () => {
  const stages = dockerStages();
  assert.ok(stages.length >= 2 && stages.every((s) => s.name), 'several named stages');
  const build = stages.find((s) => s.name === 'build');
  assert.ok(build, 'a build stage');
  const buildText = build.lines.join('\n');
  assert.match(buildText, /npm ci\b/);
  assert.match(buildText, /npm run build\b/);
  assert.match(buildText, /npm prune --omit=dev\b/);
  assert.match(buildText, /ONNXRUNTIME_NODE_INSTALL=cuda12/, 'the GPU variant installs the CUDA provider');
  const final = stages.at(-1)!;
  const finalText = final.lines.join('\n');
  const user = /^USER\s+(\S+)/m.exec(finalText)?.[1];
  assert.ok(user, 'the final stage sets USER');
  assert.doesNotMatch(user, /^(0|root)(:|$)/);
  assert.match(user, /^\d+(:\d+)?$/, 'a numeric uid, so runAsNonRoot can verify it');
  const exposed = (/^EXPOSE\s+(.+)$/m.exec(finalText)?.[1] ?? '').split(/\s+/).map((p) => Number(p.split('/')[0]));
  assert.deepEqual(exposed.sort(), [ports.grpc, ports.metrics].sort(), 'EXPOSE matches the chart ports');
  for (const dir of ['proto', 'models', 'bin']) {
    assert.match(finalText, new RegExp(`^COPY\\s+${dir}\\s`, 'm'), `the image copies ${dir}/`);
  }
  assert.match(finalText, /^COPY --from=build \/app\/dist /m);
  assert.match(finalText, /^COPY --from=build \/app\/node_modules /m);
  assert.match(finalText, /HISTOSEG_HOST=0\.0\.0\.0/);
  assert.match(finalText, /^ENTRYPOINT \["\/usr\/bin\/tini", "--"\]/m, 'tini forwards SIGTERM to node');
  const cmd = /^CMD (\[.*\])\s*$/m.exec(finalText);
  assert.deepEqual(cmd && JSON.parse(cmd[1]), ['node', ...SERVE_NODE_FLAGS, 'bin/histoseg.js', 'serve'], 'the image starts the server with its node flags');
  // Exec forms must be valid JSON, or Docker silently runs them through a shell.
  for (const m of finalText.matchAll(/^(?:CMD|ENTRYPOINT|HEALTHCHECK .*?CMD)\s+(\[.*\])\s*$/gm)) {
    assert.doesNotThrow(() => JSON.parse(m[1]), `not JSON: ${m[1]}`);
  }
  assert.match(finalText, /^HEALTHCHECK .*\/readyz/m);
  // The image's own variables must pass the server's strict config parser.
  const env: Record<string, string> = {};
  for (const m of finalText.matchAll(/\b(HISTOSEG_[A-Z_]+)=(\S+)/g)) env[m[1]] = m[2];
  const config = loadConfig({}, env);
  assert.equal(config.port, ports.grpc);
  assert.equal(config.metricsPort, ports.metrics);
  assert.equal(config.models, (values.models as Tree).imagePath, 'the chart knows where the image keeps its models');
});

test('package.json has the build script the Dockerfile runs, and bin/ prefers its output', () => {
  const pkg = JSON.parse(read('package.json')) as { scripts?: Record<string, string> };
  assert.equal(pkg.scripts?.start, ['exec', 'node', ...SERVE_NODE_FLAGS, 'bin/histoseg.js', 'serve'].join(' '), 'npm start execs node (signals reach it) with the server flags');
  assert.match(pkg.scripts?.build ?? '', /\btsc -p tsconfig\.build\.json\b/, 'scripts.build compiles src/ into dist/');
  assert.match(read('bin/histoseg.js'), /dist\/src\/cli\/main\.js/, 'bin/histoseg.js runs the compiled CLI');
});

test('.dockerignore lets through everything the Dockerfile copies from the context', () => {
  const ignore = read('.dockerignore').split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  assert.equal(ignore[0], '*', 'an allow-list');
  const allowed = new Set(ignore.filter((l) => l.startsWith('!')).map((l) => l.slice(1).replace(/\/$/, '')));
  const joined = dockerfile.replace(/\\\r?\n/g, ' ');
  const sources: string[] = [];
  for (const m of joined.matchAll(/^COPY\s+(?!--from)(.+)$/gm)) {
    const args = m[1].split(/\s+/).filter((a) => !a.startsWith('--'));
    sources.push(...args.slice(0, -1));
  }
  assert.ok(sources.length >= 5);
  assert.deepEqual(sources.filter((s) => !allowed.has(s.replace(/\/$/, ''))), [], 'copied but ignored');
  const build = parse(read('tsconfig.build.json')) as { include: string[] };
  assert.deepEqual(build.include, ['src/**/*.ts'], 'the image compiles src/ only');
});

/** Renders the chart when helm is available; returns null (and the caller skips) when it is not. */
function helmTemplate(extraValues: Tree): { docs: Tree[] } | { error: string } | null {
  const helm = process.env.HELM ?? 'helm';
  const dir = mkdtempSync(join(tmpdir(), 'histoseg-helm-'));
  try {
    const file = join(dir, 'values.yaml');
    writeFileSync(file, JSON.stringify(extraValues));
    const r = spawnSync(helm, ['template', 'histoseg', chartDir, '-f', file], { encoding: 'utf8', timeout: 30_000 });
    if (r.error) return null;
    if (r.status !== 0) return { error: r.stderr };
    return { docs: parseAllDocuments(r.stdout).map((d) => d.toJS() as Tree).filter(Boolean) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('rendered chart (needs helm): the server accepts the environment it gets', async (t) => {
  const cases: Record<string, Tree> = {
    defaults: {},
    everything: {
      tls: { enabled: true, existingSecret: 'tls', clientCA: { enabled: true, existingSecret: 'ca' } },
      auth: { enabled: true, existingSecret: 'tokens' },
      models: { volume: { persistentVolumeClaim: { claimName: 'models' } } },
      autoscaling: { enabled: true },
      serviceMonitor: { enabled: true },
      config: { maxMessageBytes: 33554432, maxDelayMs: 0, stainNormalization: false, workers: 2 },
      resources: { requests: { cpu: '500m' }, limits: { cpu: null } },
    },
  };
  for (const [name, extra] of Object.entries(cases)) {
    const out = helmTemplate(extra);
    if (out === null) {
      t.skip('no helm binary (set HELM=/path/to/helm to render the chart)');
      return;
    }
    assert.ok('docs' in out, `helm template failed for ${name}: ${'error' in out ? out.error : ''}`);
    const byKind = new Map(out.docs.map((d) => [d.kind as string, d]));
    const configMap = byKind.get('ConfigMap') as { data: Record<string, string> };
    const deployment = byKind.get('Deployment') as Tree;
    const podSpec = lookup(deployment, ['spec', 'template', 'spec']).value as Tree;
    const container = (podSpec.containers as Tree[])[0];
    const env: Record<string, string> = { ...configMap.data };
    for (const e of (container.env ?? []) as { name: string; value?: string; valueFrom?: unknown }[]) {
      env[e.name] = e.value ?? '2'; // the downward API's rounded-up CPU count
    }
    const config = loadConfig({}, env);
    assert.equal(config.host, '0.0.0.0');
    assert.equal(config.port, ports.grpc);
    assert.equal(config.metricsPort, ports.metrics);
    assert.ok(Number(podSpec.terminationGracePeriodSeconds) > config.drainTimeoutS);
    const containerPorts = (container.ports as { name: string; containerPort: number }[]).map((p) => [p.name, p.containerPort]);
    assert.deepEqual(containerPorts, [['grpc', ports.grpc], ['metrics', ports.metrics]]);
    if (name === 'everything') {
      assert.equal(config.maxMessageBytes, 33554432, 'large numbers are not rendered as 3.3554432e+07');
      assert.equal(config.tlsCert, '/etc/histoseg/tls/tls.crt');
      assert.equal(config.tokensFile, '/etc/histoseg/auth/tokens');
      assert.equal(config.models, '/models');
      assert.ok(lookup(container, ['readinessProbe', 'httpGet']).found, 'HTTP readiness under TLS');
      assert.ok(byKind.has('HorizontalPodAutoscaler') && byKind.has('ServiceMonitor'));
      assert.equal(lookup(deployment, ['spec', 'replicas']).found, false, 'the HPA owns the replica count');
      const threads = (container.env as { name: string; valueFrom?: Tree }[]).find((e) => e.name === 'HISTOSEG_THREADS');
      assert.equal(lookup(threads, ['valueFrom', 'resourceFieldRef', 'resource']).value, 'requests.cpu');
    } else {
      assert.equal(lookup(container, ['readinessProbe', 'grpc', 'port']).value, ports.grpc);
      assert.ok(!byKind.has('HorizontalPodAutoscaler') && !byKind.has('ServiceMonitor'));
      assert.equal(byKind.get('PodDisruptionBudget')?.kind, 'PodDisruptionBudget');
    }
  }
});
