/**
 * A source whose migration role is a plain login role and whose pg_hba.conf demands passwords for
 * every connection (also the unix socket), as on container images that give the application no
 * superuser; plus what the privilege elevation may touch, to compare before and after.
 */
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { adminQuery, type ClusterHandle } from './stack';

export async function requirePasswordsEverywhere(cluster: ClusterHandle): Promise<void> {
  const hba = join(cluster.dataDir, 'pg_hba.conf');
  writeFileSync(
    hba,
    '# test: passwords for everything, no trust, no peer\n' +
      'local   all   all                  scram-sha-256\n' +
      'host    all   all   127.0.0.1/32   scram-sha-256\n' +
      'host    all   all   ::1/128        scram-sha-256\n' +
      '# ümlaut comment: the restore must be byte-identical, not re-encoded\n',
  );
  await adminQuery(cluster, 'postgres', 'SELECT pg_reload_conf()');
}

/** A plain login role (no superuser, no replication, no memberships) and a database it does not own. */
export async function createPlainRole(cluster: ClusterHandle, role: string, password: string): Promise<void> {
  await adminQuery(cluster, 'postgres', `CREATE ROLE "${role.replace(/"/g, '""')}" LOGIN PASSWORD '${password.replace(/'/g, "''")}'`);
}

export function sha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** Files next to pg_hba.conf that mention pgmove (backup and state): none after a revert. */
export function elevationLeftovers(cluster: ClusterHandle): string[] {
  const hba = join(cluster.dataDir, 'pg_hba.conf');
  return readdirSync(dirname(hba)).filter((name) => name.startsWith(basename(hba)) && name.includes('pgmove'));
}

export async function roleState(cluster: ClusterHandle, role: string): Promise<{ superuser: boolean; replication: boolean; memberOf: string[] }> {
  const [row] = await adminQuery<{ superuser: boolean; replication: boolean; member_of: string[] | null }>(
    cluster,
    'postgres',
    `SELECT r.rolsuper AS superuser, r.rolreplication AS replication,
            (SELECT array_agg(g.rolname::text ORDER BY g.rolname) FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid) AS member_of
       FROM pg_roles r WHERE r.rolname = $1`,
    [role],
  );
  return { superuser: row!.superuser, replication: row!.replication, memberOf: row!.member_of ?? [] };
}

/**
 * A `kubectl` stand-in for tests: records its argv (one JSON array a line), answers
 * `get secret -n NS NAME -o jsonpath={.data.KEY}` from a fixture file ({ "NS/NAME": { KEY: base64 } }),
 * and runs what follows `--` of an `exec` locally (stdin passed through), as a pod would.
 * Returns the directory to prepend to PATH and the log's path.
 */
export function kubectlStandIn(dir: string, secrets: Record<string, Record<string, string>> = {}): { binDir: string; log: string; calls: () => string[][] } {
  const binDir = join(dir, 'standin-bin');
  mkdirSync(binDir, { recursive: true });
  const log = join(dir, 'kubectl-calls.jsonl');
  const fixture = join(dir, 'kubectl-secrets.json');
  writeFileSync(fixture, JSON.stringify(secrets));
  writeFileSync(log, '');
  const script = `#!${process.execPath}
const fs = require('fs');
const { spawnSync } = require('child_process');
const args = process.argv.slice(2);
fs.appendFileSync(${JSON.stringify(log)}, JSON.stringify(args) + '\\n');
const at = (flag) => args[args.indexOf(flag) + 1];
if (args[0] === 'get' && args[1] === 'secret') {
  const secrets = JSON.parse(fs.readFileSync(${JSON.stringify(fixture)}, 'utf8'));
  const positional = args.filter((a, i) => !a.startsWith('-') && !['-n', '-o', '--context'].includes(args[i - 1]));
  const name = positional[2];
  const secret = secrets[at('-n') + '/' + name];
  if (!secret) { process.stderr.write('Error from server (NotFound): secrets "' + name + '" not found\\n'); process.exit(1); }
  const key = /^jsonpath=\\{\\.data\\.(.*)\\}$/.exec(at('-o'))[1].replace(/\\\\\\./g, '.');
  process.stdout.write(secret[key] ?? '');
  process.exit(0);
}
const sep = args.indexOf('--');
if (!args.includes('exec') || sep < 0) { process.stderr.write('stand-in: unsupported kubectl call\\n'); process.exit(2); }
const command = args.slice(sep + 1);
const result = spawnSync(command[0], command.slice(1), { stdio: 'inherit', cwd: '/' });
process.exit(result.status === null ? 1 : result.status);
`;
  writeFileSync(join(binDir, 'kubectl'), script);
  chmodSync(join(binDir, 'kubectl'), 0o755);
  const calls = () => readFileSync(log, 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line) as string[]);
  return { binDir, log, calls };
}
