/**
 * The spec's privilege elevation block and k8s-secret references (field-named errors), and the argv the
 * execution backends build: kubectl with and without context/container/runuser, local as root.
 */
import { parseSpec } from '../../src/spec';
import { KubectlBackend, LocalBackend } from '../../src/exec-backend';
import { grantStatements, revertStatements } from '../../src/pg/privilege-needs';
import { specProblems } from '../helpers/spec-problems';

const base = {
  source: { uri: 'postgresql://app@10.0.0.5:5432/metastore', password: 'k8s-secret:metastore/metastore-postgresql/postgres-password' },
  target: { uri: 'postgresql://app@new-host/metastore', password: 'env:TARGET' },
};

const problems = (input: unknown): string[] => specProblems(parseSpec, input);

test('k8s-secret:namespace/name/key is a password reference; malformed ones name the field', () => {
  expect(parseSpec(base).source.password).toBe('k8s-secret:metastore/metastore-postgresql/postgres-password');
  expect(problems({ ...base, target: { ...base.target, password: 'k8s-secret:Bad_NS/name' } })).toEqual([
    'target.password: must be a reference like env:SOURCE_PASSWORD, file:/run/secrets/pw, k8s-secret:namespace/name/key or aws-secretsmanager:<secret ARN>#password, never the password itself',
  ]);
});

test('privilegeElevation: defaults (allow false, psql), kubectl needs namespace and pod, unknown fields refused', () => {
  const spec = parseSpec({ ...base, source: { ...base.source, privilegeElevation: { backend: 'local' } } });
  expect(spec.source.privilegeElevation).toEqual({ backend: 'local', allow: false, psql: 'psql' });
  const kube = parseSpec({ ...base, source: { ...base.source, privilegeElevation: { backend: 'kubectl', allow: true, kubectl: { namespace: 'db', pod: 'pg-0' } } } });
  expect(kube.source.privilegeElevation?.kubectl).toEqual({ namespace: 'db', pod: 'pg-0', runAs: 'exec' });
  expect(problems({ ...base, source: { ...base.source, privilegeElevation: { backend: 'kubectl' } } })).toEqual([
    'source.privilegeElevation.kubectl: backend: kubectl needs kubectl: { namespace, pod } (and container when the pod has several)',
  ]);
  expect(problems({ ...base, source: { ...base.source, privilegeElevation: { backend: 'ssh', hbaFile: 'pg_hba.conf', sudo: true } } }).sort()).toEqual([
    'source.privilegeElevation.backend: Invalid option: expected one of "local"|"kubectl"',
    'source.privilegeElevation.hbaFile: must be an absolute path',
    'source.privilegeElevation: unknown field(s) "sudo" — check the spelling against the README\'s spec reference',
  ]);
  expect(problems({ ...base, target: { ...base.target, privilegeElevation: { backend: 'local' } } })[0]).toContain('target: unknown field(s) "privilegeElevation"');
});

test('kubectl argv: context, -i only with input, container, runuser only as the server user', () => {
  const full = new KubectlBackend({ context: 'prod', namespace: 'db', pod: 'pg-0', container: 'postgresql', runAs: 'runuser' });
  full.setServerUser('postgres');
  expect(full.argvFor(['cat', "/x/it's here"], { as: 'server' })).toEqual(['kubectl', '--context', 'prod', 'exec', '-n', 'db', 'pg-0', '-c', 'postgresql', '--', 'runuser', '-u', 'postgres', '--', 'cat', "/x/it's here"]);
  expect(full.argvFor(['stat', '/d'], { as: 'default', input: 'x' })).toEqual(['kubectl', '--context', 'prod', 'exec', '-i', '-n', 'db', 'pg-0', '-c', 'postgresql', '--', 'stat', '/d']);
  const plain = new KubectlBackend({ namespace: 'db', pod: 'pg-0', runAs: 'exec' });
  plain.setServerUser('1001');
  expect(plain.argvFor(['psql', '-c', 'SELECT 1; DROP'], { as: 'server' })).toEqual(['kubectl', 'exec', '-n', 'db', 'pg-0', '--', 'psql', '-c', 'SELECT 1; DROP']);
});

test('local argv: runuser as root for the server user, as is otherwise', () => {
  const local = new LocalBackend();
  local.setServerUser('postgres');
  expect(local.argvFor(['cat', '/etc/pg_hba.conf'], { as: 'default' })).toEqual(['cat', '/etc/pg_hba.conf']);
  if (process.getuid?.() === 0) expect(local.argvFor(['cat', '/f'], { as: 'server' })).toEqual(['runuser', '-u', 'postgres', '--', 'cat', '/f']);
});

test('grant and revert statements quote identifiers', () => {
  expect(grantStatements('dump "user"', ['SUPERUSER'], ['pg_read_all_data'])).toEqual(['ALTER ROLE "dump ""user""" WITH SUPERUSER;', 'GRANT "pg_read_all_data" TO "dump ""user""";']);
  expect(revertStatements('dump "user"', ['REPLICATION'], ['pg_signal_backend'])).toEqual(['ALTER ROLE "dump ""user""" WITH NOREPLICATION;', 'REVOKE "pg_signal_backend" FROM "dump ""user""";']);
});
