/**
 * `npm run demo`: brings up the embedded stack, loads the sample shop database on the source (once),
 * gives the target a fresh empty database, migrates it online with pgmove (logical replication,
 * automatic cutover) while showing progress, and prints the validation report, the cutover's write
 * freeze and where to look next. The stack keeps running.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { PROJECT_ROOT, STACK_DIR, withTemporalClient } from '../cli/connection';
import { follow } from '../cli/follow';
import { unfreezeCommand } from '../cli/unfreeze';
import { migrationDetails } from '../cli/static-details';
import { parseSpec, type MigrationSpecInput } from '../spec';
import { TASK_QUEUE, migrationPhaseKey } from '../../workflows/messages';
import { devUp, type StackCluster } from './stack';
import { adminQuery, runSqlFile, type ClusterHandle } from './pg-cluster';

const DATABASE = 'shop';

function handleOf(cluster: StackCluster): ClusterHandle {
  return { ...cluster, host: '127.0.0.1', superuser: 'postgres', superuserPassword: readFileSync(cluster.passwordFile, 'utf8').trim() };
}

export async function runDemo(): Promise<boolean> {
  const stack = await devUp();
  const source = handleOf(stack.clusters.source!);
  const target = handleOf(stack.clusters.target!);
  const exists = await adminQuery(source, 'postgres', 'SELECT 1 FROM pg_database WHERE datname = $1', [DATABASE]);
  if (exists.length === 0) {
    console.log(`loading the sample "${DATABASE}" database into the source (PostgreSQL ${source.major}) …`);
    await adminQuery(source, 'postgres', `CREATE DATABASE ${DATABASE}`);
    runSqlFile(source, DATABASE, join(PROJECT_ROOT, 'scripts', 'sample', 'shop.sql'));
  }
  // The demo owns its target cluster: each run migrates into a fresh, empty database.
  await adminQuery(target, 'postgres', `DROP DATABASE IF EXISTS ${DATABASE} WITH (FORCE)`);
  await adminQuery(target, 'postgres', `CREATE DATABASE ${DATABASE}`);

  const id = `demo-${DATABASE}-${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '').replace('T', '-')}`;
  const input: MigrationSpecInput = {
    id,
    source: { uri: `postgresql://postgres@127.0.0.1:${source.port}/${DATABASE}`, password: `file:${stack.clusters.source!.passwordFile}` },
    target: { uri: `postgresql://postgres@127.0.0.1:${target.port}/${DATABASE}`, password: `file:${stack.clusters.target!.passwordFile}` },
    // Online, as pgmove is meant to run; autoCutover so the demo needs no second command
    // (a real migration waits in `syncing` for `pgmove cutover`).
    method: 'logical',
    jobs: 4,
    logical: { replicaIdentityFull: true, statusInterval: '1s' },
    cutover: { autoCutover: true },
  };
  parseSpec(input);
  const specDir = join(STACK_DIR, 'demo');
  mkdirSync(specDir, { recursive: true });
  const specFile = join(specDir, `${id}.yaml`);
  writeFileSync(specFile, stringify(input));
  console.log(`spec: ${specFile}\nmigrating ${DATABASE}: PostgreSQL ${source.major} (port ${source.port}) → PostgreSQL ${target.major} (port ${target.port})`);

  const ok = await withTemporalClient(async (client) => {
    const handle = await client.workflow.start('migrateDatabase', {
      taskQueue: TASK_QUEUE,
      workflowId: id,
      args: [input],
      staticSummary: `pgmove demo: ${DATABASE} from PostgreSQL ${source.major} to ${target.major}`,
      staticDetails: migrationDetails(parseSpec(input), id, specFile),
      typedSearchAttributes: [{ key: migrationPhaseKey, value: 'starting' }],
    });
    if (!(await follow(handle))) return false;
    // The demo's source is reused by the next demo run: release the fence the switch left on it.
    console.log(`\nThe old source stays frozen after the switch (cutover.sourceAfterSwitch: frozen), so no client can\nwrite where nobody reads any more. The demo releases it, as \`npx pgmove unfreeze ${id}\` does:`);
    return unfreezeCommand(client, id, TASK_QUEUE);
  });
  const ui = `http://127.0.0.1:${stack.temporal!.uiPort}/namespaces/default/workflows/${id}`;
  console.log(`
Where to look:
  Web UI:        ${ui}
  status:        npx pgmove status ${id}
  with temporal: .tools/venv/bin/temporal workflow query --workflow-id ${id} --type status
                 .tools/venv/bin/temporal workflow show --workflow-id ${id}
                 .tools/venv/bin/temporal workflow list --query 'MigrationPhase="completed"'
  databases:     ${stack.clusters.source!.binDir}/psql -h 127.0.0.1 -p ${target.port} -U postgres ${DATABASE}  (password in ${stack.clusters.target!.passwordFile})
The stack keeps running; stop it with: npx pgmove dev down`);
  return ok;
}
