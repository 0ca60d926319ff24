import { migrationDetails, migrationSummary, clusterDetails } from '../../src/cli/static-details';
import { parseSpecInput } from '../../src/spec';
import { parseClusterSpec } from '../../src/cluster-spec';

test('a migration started by the CLI carries a useful static summary and details for the Web UI, without a secret', () => {
  const spec = parseSpecInput({
    id: 'metastore-to-rds',
    source: { uri: 'postgresql://meta@10.0.0.5:5432/metastore', password: 'env:SOURCE_PASSWORD' },
    target: { uri: 'postgresql://meta@new-host:5432/metastore', password: 'file:/run/secrets/pw' },
    method: 'logical',
  });
  expect(migrationSummary(spec)).toBe('pgmove migration: 10.0.0.5:5432 → new-host:5432');
  const details = migrationDetails(spec, 'metastore-to-rds', 'migration.yaml');
  expect(details).toContain('**meta@10.0.0.5:5432/metastore** → **meta@new-host:5432/metastore**');
  expect(details).toContain('method: `logical`');
  expect(details).toContain('`npx pgmove cutover metastore-to-rds`');
  expect(details).toContain('`npx pgmove unfreeze metastore-to-rds`');
  expect(details).not.toMatch(/SOURCE_PASSWORD|run\/secrets/);
  const offline = migrationDetails(parseSpecInput({ ...spec, method: 'dump' }), 'x', 'x.yaml');
  expect(offline).not.toContain('cutover');
});

test('a cluster migration names its databases, children and cutover command', () => {
  const cluster = parseClusterSpec({
    id: 'analytics',
    source: { uri: 'postgresql://m@old:5432/postgres', password: 'env:S' },
    target: { uri: 'postgresql://m@new:5432/postgres', password: 'env:T' },
    databases: ['jobs', { name: 'metrics', method: 'logical' }],
  });
  const details = clusterDetails(cluster, 'cluster.yaml');
  expect(details).toContain('databases: jobs, metrics');
  expect(details).toContain('`analytics.<database>`');
  expect(details).toContain('`npx pgmove cutover analytics`');
});
