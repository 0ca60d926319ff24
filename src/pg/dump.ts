/**
 * pg_dump / pg_restore wrappers for the schema phases: argv built from the spec (filters, options),
 * passwords only through the environment, TOC parsing for resumable post-data.
 */
import { assertSafeMigrationId } from '../migration-id';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MigrationSpec } from '../spec';
import { CommandError, run, type RunOptions } from '../exec';
import { explainLibpqTlsError } from './tls';
import { libpqConninfo, libpqEnv, withClient, type ConnectionInfo } from './connect';
import { partitionsOfNamedTables } from './catalog';
import { exactPattern } from './sql';

export type Section = 'pre-data' | 'post-data';

/** Per-migration scratch directory for dump archives (schema only; removed by cleanup). */
export async function workDir(migrationId: string): Promise<string> {
  const dir = workDirPath(migrationId);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  return dir;
}

/**
 * Offline with the source frozen, the schema cannot change between pre-data and post-data: pre-data
 * dumps both sections into one archive in the work dir, named after this freeze's token (recorded on
 * the source), and post-data restores from it instead of running pg_dump again (seconds with thousands
 * of tables). A file of an earlier freeze never matches; a worker without the file (another host)
 * dumps post-data itself. Undefined: no reuse (online methods, no freeze, a freeze record without token).
 */
export function schemaArchiveName(spec: MigrationSpec, freeze: { migrationId?: string; token?: string } | undefined, migrationId: string): string | undefined {
  if (spec.method !== 'dump' || !spec.freezeSource || !freeze?.token || freeze.migrationId !== migrationId) return undefined;
  return `schema-${freeze.token.replace(/[^A-Za-z0-9-]/g, '')}.dump`;
}

/** Where workDir puts a migration's scratch files on this worker (not created). */
export function workDirPath(migrationId: string): string {
  return join(process.env.PGMOVE_WORK_DIR ?? join(tmpdir(), 'pgmove'), assertSafeMigrationId(migrationId).replace(/[^A-Za-z0-9._-]/g, '_'));
}

/** Leaf partitions of the named partitioned tables (see catalog.partitionsOfNamedTables). */
export interface PartitionExpansion {
  include: string[];
  exclude: string[];
}

/** pg_dump filter and option arguments equivalent to the spec's include/exclude and dump options. */
export function dumpOptionArgs(spec: MigrationSpec, hasLargeObjects: boolean, partitions: PartitionExpansion = { include: [], exclude: [] }): string[] {
  const args: string[] = [];
  for (const schema of spec.include.schemas) args.push(`--schema=${exactPattern(schema)}`);
  for (const table of [...spec.include.tables, ...partitions.include]) args.push(`--table=${exactPattern(...splitOnce(table))}`);
  for (const schema of spec.exclude.schemas) args.push(`--exclude-schema=${exactPattern(schema)}`);
  for (const table of [...spec.exclude.tables, ...partitions.exclude]) args.push(`--exclude-table=${exactPattern(...splitOnce(table))}`);
  const filtered = spec.include.schemas.length + spec.include.tables.length > 0;
  if (filtered && hasLargeObjects) args.push('-b'); // --blobs before 16, --large-objects after: -b works in both
  if (spec.dump.noOwner) args.push('--no-owner');
  if (spec.dump.noPrivileges) args.push('--no-privileges');
  args.push(...spec.dump.extraArgs);
  return args;
}

function splitOnce(table: string): [string, string] {
  const dot = table.indexOf('.');
  return [table.slice(0, dot), table.slice(dot + 1)];
}

/** How a child tool runs: `applicationName` names its sessions (the stall watchdog finds them by it). */
export type ToolRunOptions = RunOptions & { applicationName?: string };

/** Dumps one section of the source into a custom-format archive and returns its path. */
export async function dumpSection(
  binDir: string,
  source: ConnectionInfo,
  spec: MigrationSpec,
  section: Section | Section[],
  file: string,
  hasLargeObjects: boolean,
  options: ToolRunOptions = {},
): Promise<string> {
  const partitions = await withClient(source, 'source', async (client) => ({
    include: await partitionsOfNamedTables(client, spec.include.tables),
    exclude: await partitionsOfNamedTables(client, spec.exclude.tables),
  }));
  await runTool(
    join(binDir, 'pg_dump'),
    // Subscriptions are the source server's connections elsewhere, not schema: a copy would hold the
    // same upstream slot name and connection string (password included). See README, post-data.
    [`--dbname=${libpqConninfo(source.database)}`, '--format=custom', ...[section].flat().map((s) => `--section=${s}`), `--file=${file}`, '--no-subscriptions', ...dumpOptionArgs(spec, hasLargeObjects, partitions)],
    { ...options, env: libpqEnv(source, options.applicationName) },
  );
  return file;
}

/** run, with what failed and how to fix it added to a TLS failure of the tool's connection. */
async function runTool(file: string, args: string[], options: RunOptions): Promise<void> {
  try {
    await run(file, args, options);
  } catch (error) {
    const hint = error instanceof CommandError ? explainLibpqTlsError(error.stderr) : undefined;
    if (hint && error instanceof CommandError) throw new CommandError(error.command, error.exitCode, `${error.stderr.trim()}\n${hint}`);
    throw error;
  }
}

export interface RestoreOptions {
  section: Section;
  jobs: number;
  listFile?: string;
  singleTransaction?: boolean;
  noOwner: boolean;
  noPrivileges: boolean;
  /** application_name of the restore's sessions, so a retry finds those of a killed attempt. */
  applicationName?: string;
}

export async function restoreArchive(
  binDir: string,
  target: ConnectionInfo,
  archive: string,
  restore: RestoreOptions,
  options: ToolRunOptions = {},
): Promise<void> {
  const args = [
    `--dbname=${libpqConninfo(target.database)}`,
    `--section=${restore.section}`,
    '--exit-on-error',
    '--verbose',
  ];
  if (restore.singleTransaction) args.push('--single-transaction');
  else if (restore.jobs > 1) args.push(`--jobs=${restore.jobs}`);
  if (restore.listFile) args.push(`--use-list=${restore.listFile}`);
  if (restore.noOwner) args.push('--no-owner');
  if (restore.noPrivileges) args.push('--no-privileges');
  args.push(archive);
  await runTool(join(binDir, 'pg_restore'), args, { ...options, env: libpqEnv(target, restore.applicationName ?? options.applicationName) });
}

export interface TocEntry {
  /** The line as pg_restore -l printed it (written back into a --use-list file). */
  line: string;
  dumpId: number;
  catalogOid: number;
  objectOid: number;
  /** Object type, e.g. INDEX, FK CONSTRAINT, TRIGGER, MATERIALIZED VIEW DATA. */
  type: string;
}

const TOC_TYPES = [
  'FK CONSTRAINT', 'CHECK CONSTRAINT', 'INDEX ATTACH', 'ROW SECURITY', 'MATERIALIZED VIEW DATA', 'DEFAULT ACL', 'EVENT TRIGGER', 'PUBLICATION TABLE',
  'PUBLICATION TABLES IN SCHEMA', 'CONSTRAINT', 'INDEX', 'TRIGGER', 'RULE', 'POLICY', 'STATISTICS', 'COMMENT', 'ACL',
  'PUBLICATION', 'SUBSCRIPTION', 'SECURITY LABEL',
];

/** Parses `pg_restore -l` output (comment lines start with ';'). */
export function parseTocList(text: string): TocEntry[] {
  const entries: TocEntry[] = [];
  for (const line of text.split('\n')) {
    const match = /^(\d+); (\d+) (\d+) (.*)$/.exec(line);
    if (!match) continue;
    const rest = match[4] ?? '';
    const type = TOC_TYPES.find((t) => rest.startsWith(`${t} `)) ?? rest.split(' ')[0] ?? '';
    entries.push({ line, dumpId: Number(match[1]), catalogOid: Number(match[2]), objectOid: Number(match[3]), type });
  }
  return entries;
}

/** The archive's TOC, through a file: the captured output of a child is capped at 1 MB, and 10,000 tables list more. */
/** The archive's TOC; with `section`, only that section's entries. */
export async function listArchive(binDir: string, archive: string, section?: Section): Promise<TocEntry[]> {
  const listFile = `${archive}.toc`;
  await run(join(binDir, 'pg_restore'), ['--list', ...(section ? [`--section=${section}`] : []), `--file=${listFile}`, archive]);
  try {
    return parseTocList(await readFile(listFile, 'utf8'));
  } finally {
    await rm(listFile, { force: true });
  }
}
