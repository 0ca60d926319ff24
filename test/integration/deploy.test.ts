/**
 * deploy/: the Kustomize manifests, the Dockerfile and the worker's health endpoint. No cluster runs
 * here: the manifests are parsed and every reference between them is checked (names, labels and
 * selectors, mounted ConfigMap keys, Secret names, the ServiceAccount bound by RBAC, namespaces the spec
 * names, image names, the container commands against the real CLI's `--help`), and the spec inside the
 * ConfigMap is validated by pgmove's own parser. The health endpoint, `pgmove health` and
 * `pgmove start --existing-ok` (what the Job runs) are exercised against a real Temporal dev server.
 */
import { accessSync, constants, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { parseAllDocuments, parse } from 'yaml';
import { parseSpec } from '../../src/spec';
import { allowedSecretPatterns, defaultAllowedSecrets, isSecretAllowed, specSecretReferences } from '../../src/secret-policy';
import { TestStack } from '../helpers/stack';
import { pgmoveCli, writeSpec } from '../helpers/migration';
import { freePort, waitFor } from '../../src/dev/ports';
import { stopTemporalServer } from '../../src/dev/temporal-server';
import { stopWorkerProcess } from '../../src/dev/worker-process';

const ROOT = join(__dirname, '..', '..');
const DEPLOY = join(ROOT, 'deploy');

/* eslint-disable @typescript-eslint/no-explicit-any -- Kubernetes manifests are untyped YAML here */
type Manifest = { kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> }; [key: string]: any };

const kustomization = parse(readFileSync(join(DEPLOY, 'kustomization.yaml'), 'utf8')) as { resources: string[]; images: { name: string; newName: string }[] };
const manifests: Manifest[] = kustomization.resources.flatMap((file) =>
  parseAllDocuments(readFileSync(join(DEPLOY, file), 'utf8')).map((doc) => {
    if (doc.errors.length) throw new Error(`${file}: ${doc.errors[0]!.message}`);
    return doc.toJS() as Manifest;
  }),
);
const one = (kind: string, name?: string): Manifest => {
  const found = manifests.filter((m) => m.kind === kind && (name === undefined || m.metadata.name === name));
  if (found.length !== 1) throw new Error(`expected one ${kind} ${name ?? ''}, found ${found.length}`);
  return found[0]!;
};
const cliHelp = (...command: string[]): string => {
  const result = spawnSync(process.execPath, [join(ROOT, 'bin', 'pgmove.js'), ...command, '--help'], { encoding: 'utf8' });
  expect(result.status).toBe(0);
  return result.stdout;
};
/** Every --option in args is an option of that pgmove command. */
const expectCliAccepts = (args: string[]) => {
  const help = cliHelp(args[0]!);
  for (const option of args.filter((a) => a.startsWith('-'))) expect(help).toMatch(new RegExp(`(^|[ ,])${option.replace(/[-]/g, '\\-')}[ ,]`, 'm'));
};

const deployment = one('Deployment', 'pgmove-worker');
const job = one('Job');
const workerPod = deployment.spec.template.spec;
const worker = workerPod.containers[0];
const specConfigMap = one('ConfigMap', 'pgmove-migration-spec');
const migrationSpec = parseSpec(parse(specConfigMap.data['spec.yaml']));

test('every manifest in deploy/ is listed by the kustomization, and every listed file exists', () => {
  const files = spawnSync('ls', [DEPLOY], { encoding: 'utf8' }).stdout.split('\n').filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml' && !f.includes('.example.'));
  expect([...kustomization.resources].sort()).toEqual(files.sort());
  for (const m of manifests) expect(m.metadata.name).toBeTruthy();
});

test('worker Deployment: selector, ServiceAccount, Secret, image, probes backed by the health endpoint, CLI command', () => {
  expect(deployment.spec.template.metadata.labels).toMatchObject(deployment.spec.selector.matchLabels);
  const account = one('ServiceAccount', workerPod.serviceAccountName);
  expect(account.metadata.namespace).toBe(deployment.metadata.namespace);
  // The env Secret is created out of band; the example names it and its keys are the specs' env: references.
  const example = parseAllDocuments(readFileSync(join(DEPLOY, 'worker-secret.example.yaml'), 'utf8'))[0]!.toJS() as Manifest;
  expect(worker.envFrom[0].secretRef.name).toBe(example.metadata.name);
  expect(example.metadata.namespace).toBe(deployment.metadata.namespace);
  const envRefs = [migrationSpec.source.password, migrationSpec.target.password].filter((r) => r?.startsWith('env:')).map((r) => r!.slice(4));
  for (const name of envRefs) expect(Object.keys(example.stringData)).toContain(name);
  // The workers allow exactly the references the example spec uses (not the default, which has neither).
  const allowed = worker.env.find((e: { name: string }) => e.name === 'PGMOVE_ALLOWED_SECRETS').value as string;
  for (const { reference } of specSecretReferences(migrationSpec)) expect([reference, isSecretAllowed(reference, allowedSecretPatterns({ PGMOVE_ALLOWED_SECRETS: allowed }))]).toEqual([reference, true]);
  for (const { reference } of specSecretReferences(migrationSpec)) expect(isSecretAllowed(reference, defaultAllowedSecrets())).toBe(false);
  expect(worker.image).toBe(kustomization.images[0]!.name);
  expect(job.spec.template.spec.containers[0].image).toBe(kustomization.images[0]!.name);
  // The command: `pgmove worker --health-port N`, and the probes call that port's endpoints.
  expect(worker.args[0]).toBe('worker');
  expectCliAccepts(worker.args);
  const healthPort = Number(worker.args[worker.args.indexOf('--health-port') + 1]);
  const portName = worker.ports.find((p: { containerPort: number }) => p.containerPort === healthPort).name;
  expect(worker.livenessProbe.httpGet).toEqual({ path: '/livez', port: portName });
  expect(worker.readinessProbe.httpGet).toEqual({ path: '/readyz', port: portName });
  expect(worker.resources.requests.cpu).toBeDefined();
  expect(worker.resources.limits.memory).toBeDefined();
  // Writable places for a read-only root: the bundle (tmpdir) and the work directory.
  const mounts = Object.fromEntries(worker.volumeMounts.map((m: { name: string; mountPath: string }) => [m.mountPath, m.name]));
  expect(mounts['/tmp']).toBeDefined();
  expect(mounts[worker.env.find((e: { name: string }) => e.name === 'PGMOVE_WORK_DIR').value]).toBeDefined();
  for (const name of Object.values(mounts)) expect(workerPod.volumes.map((v: { name: string }) => v.name)).toContain(name);
});

test('one-shot Job: pgmove start -f on the mounted ConfigMap key, which holds a valid spec', () => {
  const pod = job.spec.template.spec;
  const args: string[] = pod.containers[0].args;
  expect(args[0]).toBe('start');
  expectCliAccepts(args);
  const specPath = args[args.indexOf('-f') + 1]!;
  const mount = pod.containers[0].volumeMounts.find((m: { mountPath: string }) => specPath.startsWith(m.mountPath + '/'));
  const volume = pod.volumes.find((v: { name: string }) => v.name === mount.name);
  expect(volume.configMap.name).toBe(specConfigMap.metadata.name);
  const item = volume.configMap.items.find((i: { path: string }) => join(mount.mountPath, i.path) === specPath);
  expect(Object.keys(specConfigMap.data)).toContain(item.key);
  expect(specConfigMap.metadata.namespace).toBe(job.metadata.namespace);
  expect(migrationSpec.source.privilegeElevation?.backend).toBe('kubectl');
});

test('RBAC: pods/exec and the referenced Secret in the source namespace only, bound to the worker ServiceAccount', () => {
  const elevation = migrationSpec.source.privilegeElevation!.kubectl!;
  const [secretNamespace, secretName] = migrationSpec.source.password!.replace(/^k8s-secret:/, '').split('/');
  const role = one('Role', 'pgmove-source-access');
  expect(role.metadata.namespace).toBe(elevation.namespace);
  expect(secretNamespace).toBe(elevation.namespace);
  const rule = (resource: string) => role.rules.find((r: { resources: string[] }) => r.resources.includes(resource));
  expect(rule('pods/exec').verbs).toContain('create');
  expect(rule('pods').verbs).toContain('get');
  expect(rule('secrets').resourceNames).toEqual([secretName]);
  expect(manifests.filter((m) => m.kind === 'ClusterRole' || m.kind === 'ClusterRoleBinding')).toEqual([]);
  for (const binding of manifests.filter((m) => m.kind === 'RoleBinding')) {
    expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: workerPod.serviceAccountName, namespace: deployment.metadata.namespace }]);
    expect(one('Role', binding.roleRef.name).metadata.namespace).toBe(binding.metadata.namespace);
  }
  // The switch hook in the spec writes a Secret the hook Role allows, in its namespace.
  const hook = migrationSpec.cutover.switchHook!;
  expect(hook[0]).toBe('/app/deploy/hooks/update-k8s-secret.sh');
  accessSync(join(ROOT, hook[0]!.replace(/^\/app\//, '')), constants.X_OK);
  const hookRole = one('Role', 'pgmove-switch-hook');
  expect(hookRole.metadata.namespace).toBe(hook[1]);
  expect(hookRole.rules.flatMap((r: { resourceNames?: string[] }) => r.resourceNames ?? [])).toContain(hook[2]);
});

test('NetworkPolicy selects the worker pods and lets the probes, Temporal and the source in', () => {
  const policy = one('NetworkPolicy');
  expect(deployment.spec.template.metadata.labels).toMatchObject(policy.spec.podSelector.matchLabels);
  const healthPort = worker.ports[0].containerPort;
  expect(policy.spec.ingress.flatMap((r: { ports: { port: number }[] }) => r.ports.map((p) => p.port))).toEqual([healthPort]);
  const sourcePort = Number(new URL(migrationSpec.source.uri).port || 5432);
  const toSource = policy.spec.egress.find((r: { to?: { namespaceSelector?: { matchLabels: Record<string, string> } }[] }) =>
    r.to?.some((t) => t.namespaceSelector?.matchLabels['kubernetes.io/metadata.name'] === migrationSpec.source.privilegeElevation!.kubectl!.namespace),
  );
  expect(toSource.ports.map((p: { port: number }) => p.port)).toContain(sourcePort);
  const temporalPort = Number(worker.env.find((e: { name: string }) => e.name === 'TEMPORAL_ADDRESS').value.split(':').pop());
  expect(policy.spec.egress.some((r: { ports: { port: number }[] }) => r.ports.some((p) => p.port === temporalPort))).toBe(true);
});

test('Dockerfile: PostgreSQL 18 client tools, kubectl and helm, the CLI as entrypoint, the user and port the manifests expect', () => {
  const dockerfile = readFileSync(join(DEPLOY, 'Dockerfile'), 'utf8');
  expect(dockerfile).toMatch(/^ARG PG_CLIENT_MAJORS="[^"]*\b18\b[^"]*"$/m);
  expect(dockerfile).toContain('postgresql-client-$major');
  expect(dockerfile).toMatch(/apt-get install -y --no-install-recommends \$packages kubectl helm/);
  expect(dockerfile).toMatch(/^ENTRYPOINT \["node", "\/app\/bin\/pgmove.js"\]$/m);
  expect(dockerfile).toMatch(/^COPY deploy\/hooks \.\/deploy\/hooks$/m);
  expect(dockerfile).toMatch(new RegExp(`^USER ${workerPod.securityContext.runAsUser}$`, 'm'));
  expect(dockerfile).toMatch(new RegExp(`^EXPOSE ${worker.ports[0].containerPort}$`, 'm'));
  expect(dockerfile).toMatch(/^HEALTHCHECK .*"health"\]$/m);
  cliHelp('health');
  // Everything the CLI imports at start is copied into the image.
  for (const dir of dockerfile.matchAll(/^COPY (\S+) \.\/\S*$/gm)) expect(existsSync(join(ROOT, dir[1]!))).toBe(true);
  for (const dir of ['bin', 'src', 'activities', 'workflows', 'worker', 'scripts']) expect(dockerfile).toContain(`COPY ${dir} ./${dir}`);
  expect(readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n')).not.toContain('deploy');
});

describe('against a real Temporal dev server', () => {
  const stack = new TestStack();
  beforeAll(() => stack.startTemporal());
  afterAll(() => stack.stop());

  test('pgmove start --existing-ok (the Job, run twice) starts the migration once', () => {
    const spec = writeSpec(stack, 'k8s-spec', parse(specConfigMap.data['spec.yaml']));
    const env = { PGMOVE_TASK_QUEUE: 'no-worker-polls-this' }; // started, never run
    const first = pgmoveCli(stack, ['start', '-f', spec, '--existing-ok'], env);
    expect(first).toMatchObject({ code: 0, stdout: 'metastore-to-rds\n' });
    const again = pgmoveCli(stack, ['start', '-f', spec, '--existing-ok'], env);
    expect(again.code).toBe(0);
    expect(again.stdout).toBe('metastore-to-rds (already started: RUNNING)\n');
    expect(pgmoveCli(stack, ['start', '-f', spec], env).code).toBe(2);
  });

  test('worker health: /livez and /readyz, pgmove health; not ready when Temporal is gone', async () => {
    const port = await freePort();
    const worker = await stack.startWorker({ PGMOVE_HEALTH_PORT: String(port) });
    const get = async (path: string) => {
      const response = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(15_000) });
      return { status: response.status, body: (await response.json()) as Record<string, string> };
    };
    expect(await get('/livez')).toEqual({ status: 200, body: { state: 'RUNNING' } });
    expect(await get('/readyz')).toEqual({ status: 200, body: { state: 'RUNNING', temporal: 'ok' } });
    expect(pgmoveCli(stack, ['health', '--url', `http://127.0.0.1:${port}/readyz`])).toMatchObject({ code: 0 });

    await stopTemporalServer(stack.temporal!);
    stack.temporalStopped = true; // nothing left for stack.stop() to record histories from
    const notReady = await waitFor('readiness to fail without Temporal', async () => {
      const answer = await get('/readyz');
      return answer.status === 503 ? answer : undefined;
    }, 60_000, 500);
    expect(notReady.body.temporal).toBeTruthy();
    expect((await get('/livez')).status).toBe(200);
    expect(pgmoveCli(stack, ['health', '--url', `http://127.0.0.1:${port}/readyz`]).code).toBe(1);

    await stopWorkerProcess(worker, 'SIGKILL');
    const gone = pgmoveCli(stack, ['health', '--url', `http://127.0.0.1:${port}/livez`, '--timeout', '2000']);
    expect(gone.code).toBe(1);
  });
});
