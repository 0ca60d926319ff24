/**
 * Phase 10, validation: per table a row count and an order-independent checksum computed inside each
 * database (no row data pulled into the worker), sequence values, large objects, and a schema object
 * comparison. A mismatch fails the migration and names the tables. Offline with the source frozen, the
 * tables the copy compared right after their copy and found equal (src/pg/table-checks-store.ts) are
 * not compared again.
 */
import { Context } from '@temporalio/activity';
import type { Client } from 'pg';
import type { MigrationSpec } from '../src/spec';
import type { TableValidation, ValidationReport } from '../src/model';
import { connect, connectionInfo, withClient, type ConnectionInfo } from '../src/pg/connect';
import { listSequences, listTables } from '../src/pg/catalog';
import { displayName, literal, qualified, type TableName } from '../src/pg/sql';
import { allSettledOrThrow, checksumsWith, nextBatch, sourceChecksums, withRowHashes, type SourceTableChecksum, type TableCheck, type TableSums } from '../src/pg/table-checksums';
import { dropTableChecks, loadEqualTableChecks } from '../src/pg/table-checks-store';
import { SCRATCH_SCHEMA } from '../src/pg/copy-plan-store';
import { startHeartbeat } from '../src/heartbeat';
import { StallWatch, stallTimeoutMs } from '../src/stall';
import { activityLogger } from '../src/log';
import { StepTimer } from '../src/step-timer';

/** Output settings that make row text identical on both servers, whatever their defaults. */
const NORMALIZE_OUTPUT = [
  `SET TimeZone = 'UTC'`,
  `SET DateStyle = 'ISO, YMD'`,
  `SET IntervalStyle = 'postgres'`,
  `SET extra_float_digits = 1`,
  `SET bytea_output = 'hex'`,
  `SET lc_monetary = 'C'`,
];

export type { SourceTableChecksum };

/** Normalizes a session's output so row text is identical on both servers (for md5 row hashes). */
export async function normalizeSession(client: Client): Promise<void> {
  await client.query(NORMALIZE_OUTPUT.join('; '));
}

/** Counts and checksums on the source side (the row hash is decided here, per table). */
export async function tableChecksums(source: Client, tables: TableName[], withChecksums: boolean): Promise<SourceTableChecksum[]> {
  await normalizeSession(source);
  return sourceChecksums(source, tables, withChecksums);
}

export interface ValidateInput {
  spec: MigrationSpec;
  /** Snapshot mode: the source side as of the copy's snapshot (the live source has moved on). */
  sourceTables?: SourceTableChecksum[];
  /** Logical cutover: the target as of the cutover (an exported snapshot held by the caller). */
  targetSnapshot?: string;
}

export async function validate(input: ValidateInput): Promise<ValidationReport> {
  const { spec } = input;
  const log = activityLogger('validate');
  const sourceInfo = await connectionInfo(spec.source, 'source');
  const targetInfo = await connectionInfo(spec.target, 'target');
  // Seconds per step, in the log: where a slow validation spends its time.
  const timer = new StepTimer();
  const allTables = await withClient(sourceInfo, 'source', (c) => listTables(c, spec));
  timer.lap('listTables');
  // Keyed by the quoted name (display names can collide); figures recorded by older workers by display name.
  const atSnapshot = new Map((input.sourceTables ?? []).map((t) => [t.relation ?? t.table, t]));
  const snapshotFigures = (t: TableName) => atSnapshot.get(qualified(t)) ?? atSnapshot.get(displayName(t));
  // Offline with the source frozen, the copy compared most tables already (activities/copy-plan.ts).
  const migrationId = Context.current().info.workflowExecution?.workflowId;
  const plainOffline = migrationId !== undefined && input.sourceTables === undefined && input.targetSnapshot === undefined;
  const comparedDuringCopy = plainOffline ? await withClient(targetInfo, 'target', (c) => loadEqualTableChecks(c, migrationId)) : new Map<string, TableCheck>();
  // A comparison with counts only does not stand for one with checksums.
  const usable = (t: TableName) => {
    const check = comparedDuringCopy.get(qualified(t));
    return check && !(spec.validate.checksums && check.sourceChecksum === null) ? check : undefined;
  };
  const results: TableValidation[] = allTables.flatMap((t) => {
    const check = usable(t);
    return check ? [{ table: check.table, sourceRows: check.sourceRows, targetRows: check.targetRows, sourceChecksum: check.sourceChecksum ?? undefined, targetChecksum: check.targetChecksum ?? undefined, ok: true }] : [];
  });
  const tablesComparedDuringCopy = results.length;
  const tables = allTables.filter((t) => !usable(t));
  // Sequences, schema objects and large objects are compared while the tables are (other sessions):
  // with thousands of small tables the table comparisons wait on round trips more than on the cores.
  const compareTheRest = async () => {
    const restStarted = Date.now();
    const [sourceSeq, targetSeq] = await Promise.all([
      withClient(sourceInfo, 'source', (c) => listSequences(c, spec)),
      withClient(targetInfo, 'target', (c) => listSequences(c, spec)),
    ]);
    const targetSeqByName = new Map(targetSeq.map((s) => [displayName(s), s]));
    const sequences = sourceSeq.map((s) => {
      const t = targetSeqByName.get(displayName(s));
      const render = (x?: { lastValue: string; isCalled: boolean }) => (x ? `${x.lastValue}${x.isCalled ? '' : ' (not called)'}` : 'missing');
      // At a snapshot of a live source, the source's sequences may have moved on since they were set.
      const behindLiveSource = input.sourceTables !== undefined && t !== undefined && BigInt(t.lastValue) <= BigInt(s.lastValue);
      // After a cutover the application may already draw values on the target: ahead is fine, behind is not.
      const aheadAfterSwitch = input.targetSnapshot !== undefined && t !== undefined && BigInt(t.lastValue) >= BigInt(s.lastValue);
      return { sequence: displayName(s), source: render(s), target: render(t), ok: render(s) === render(t) || behindLiveSource || aheadAfterSwitch };
    });

    const [sourceObjects, targetObjects] = await Promise.all([
      withClient(sourceInfo, 'source', (c) => schemaObjects(c, spec)),
      withClient(targetInfo, 'target', (c) => schemaObjects(c, spec)),
    ]);
    const schemaDifferences = [
      ...[...sourceObjects].filter((o) => !targetObjects.has(o)).map((o) => `missing on target: ${o}`),
      ...[...targetObjects].filter((o) => !sourceObjects.has(o)).map((o) => `only on target: ${o}`),
    ];
    const [sourceLo, targetLo] = await Promise.all([
      withClient(sourceInfo, 'source', largeObjectDigest),
      // At the cutover's snapshot when there is one: the application may use the target by now.
      openNormalized(targetInfo, 'target', input.targetSnapshot).then(async (client) => {
        try {
          return await largeObjectDigest(client);
        } finally {
          await client.end().catch(() => undefined);
        }
      }),
    ]);
    const largeObjects = { source: sourceLo.count, target: targetLo.count, ok: sourceLo.count === targetLo.count && sourceLo.digest === targetLo.digest };
    return { sequences, schemaDifferences, schemaObjectCount: sourceObjects.size, largeObjects, seconds: (Date.now() - restStarted) / 1000 };
  };
  const theRest = compareTheRest();
  // Awaited after the tables; a failure stops the table loop at its next batch instead of hours later.
  let restFailed = false;
  theRest.catch(() => (restFailed = true));
  // A lock on a table stops its count; the watch reports the blocker and, after timeouts.stall, cancels
  // the query (the attempt fails with the watch's error and is retried).
  const watch = new StallWatch({
    activity: 'validation', stallMs: stallTimeoutMs(spec), endpoints: { source: sourceInfo, target: targetInfo },
    progress: () => results.length, onStall: () => undefined,
  });
  const heartbeat = startHeartbeat(() => ({ tablesChecked: results.length, tables: allTables.length, tablesComparedDuringCopy, ...watch.details() }));
  try {
    const queue = [...tables];
    const worker = async () => {
      // Opened only when a table has no snapshot result (always, outside snapshot mode).
      let source: Client | undefined;
      const target = await openNormalized(targetInfo, 'target', input.targetSnapshot);
      watch.track('target', target);
      let inTransaction = 0;
      try {
        for (let batch = nextBatch(queue); batch.length && !restFailed; batch = nextBatch(queue)) {
          // A transaction keeps a lock on every table it read: renew it before the server's lock table fills.
          inTransaction += batch.length;
          if (inTransaction > TABLES_PER_TRANSACTION) {
            inTransaction = batch.length;
            await renewTransaction(target, input.targetSnapshot);
            if (source) await renewTransaction(source);
          }
          const batchStarted = Date.now();
          const unknown = batch.filter((t) => !snapshotFigures(t));
          if (!source && unknown.length > 0) watch.track('source', (source = await openNormalized(sourceInfo, 'source')));
          // The row hashes are decided on the source; then both servers count and sum at the same time.
          const bothSides = (hashes: (string | null)[]) => {
            const hashOf = new Map(unknown.map((t, i) => [t, hashes[i]!]));
            const rowHashOf = (t: (typeof batch)[number]) => (hashOf.has(t) ? hashOf.get(t)! : snapshotFigures(t)!.rowHash);
            return allSettledOrThrow<[TableSums, TableSums]>([unknown.length === 0 ? Promise.resolve([]) : checksumsWith(source!, unknown, hashes), checksumsWith(target, batch, batch.map(rowHashOf))]);
          };
          const {
            rowHashes: hashes,
            result: [sourceSide, targetSide],
          } = unknown.length === 0 ? { rowHashes: [], result: await bothSides([]) } : await withRowHashes(source!, unknown, spec.validate.checksums, bothSides);
          // By position, not by name: checksumsWith answers in the order it was asked.
          const computed = new Map(unknown.map((t, i) => [t, { ...sourceSide[i]!, rowHash: hashes[i]! }]));
          const ordered = batch.map((t) => computed.get(t) ?? snapshotFigures(t)!);
          const seconds = (Date.now() - batchStarted) / 1000 / batch.length;
          batch.forEach((table, i) => {
            const s = ordered[i]!;
            const t = targetSide[i]!;
            results.push({
              table: displayName(table),
              sourceRows: s.rows,
              targetRows: t.rows,
              sourceChecksum: s.checksum ?? undefined,
              targetChecksum: t.checksum ?? undefined,
              ok: s.rows === t.rows && s.checksum === t.checksum,
              seconds,
            });
          });
        }
      } finally {
        await source?.end().catch(() => undefined);
        await target.end().catch(() => undefined);
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(spec.jobs, tables.length)) }, worker));
  } catch (error) {
    throw watch.failure ?? error;
  } finally {
    watch.stop();
    heartbeat.stop();
  }
  timer.lap('tables');
  results.sort((a, b) => a.table.localeCompare(b.table));

  const { sequences, schemaDifferences, schemaObjectCount, largeObjects, seconds: restSeconds } = await theRest;
  timer.lap('afterTables');
  const badTables = results.filter((r) => !r.ok);
  const badSequences = sequences.filter((s) => !s.ok);
  const ok = badTables.length === 0 && badSequences.length === 0 && schemaDifferences.length === 0 && largeObjects.ok;
  const summary = ok
    ? `validation passed: ${results.length} table(s) with ${results.reduce((n, r) => n + r.sourceRows, 0)} row(s) equal${spec.validate.checksums ? ' (counts and checksums)' : ' (counts)'}${tablesComparedDuringCopy ? ` (${tablesComparedDuringCopy} compared right after their copy)` : ''}, ${sequences.length} sequence(s) equal, ${schemaObjectCount} schema object(s) present, ${largeObjects.source} large object(s) equal`
    : [
        'validation FAILED:',
        ...(badTables.length > 50 ? [`  ${badTables.length} tables differ; the first 50:`] : []),
        ...badTables.slice(0, 50).map((r) => `  table ${r.table}: source ${r.sourceRows} rows / target ${r.targetRows} rows${r.sourceChecksum !== r.targetChecksum ? ', checksums differ' : ''}`),
        ...badSequences.map((s) => `  sequence ${s.sequence}: source ${s.source} / target ${s.target}`),
        ...schemaDifferences.slice(0, 50).map((d) => `  ${d}`),
        ...(largeObjects.ok ? [] : [`  large objects: source ${largeObjects.source} / target ${largeObjects.target} (or contents differ)`]),
      ].join('\n');
  log.info({ ok, tables: results.length, tablesComparedDuringCopy, badTables: badTables.length, steps: { ...timer.seconds(), sequencesSchemaLargeObjects: restSeconds } }, 'validation finished');
  // The report carries the comparisons now; a retry before this point still finds them.
  if (plainOffline) await withClient(targetInfo, 'target', (c) => dropTableChecks(c, migrationId));
  return { ok, ...reportedTables(results), tablesComparedDuringCopy, sequences, schemaDifferences, largeObjects, summary };
}

/** Tables read in one transaction before it is renewed (each read table holds a lock until the end). */
const TABLES_PER_TRANSACTION = 500;
/** Up to this many tables the report lists every one; above, the differing ones and the slowest. */
const REPORT_EVERY_TABLE_UP_TO = 100;

/** The report's table list, bounded (it lives in the workflow's status): totals, differing tables, the slowest. */
export function reportedTables(results: TableValidation[]): Pick<ValidationReport, 'tables' | 'tablesChecked' | 'rowsChecked' | 'tablesOmitted'> {
  const rowsChecked = results.reduce((n, r) => n + r.sourceRows, 0);
  if (results.length <= REPORT_EVERY_TABLE_UP_TO) return { tables: results, tablesChecked: results.length, rowsChecked, tablesOmitted: 0 };
  const differing = results.filter((r) => !r.ok).slice(0, REPORT_EVERY_TABLE_UP_TO);
  const slowest = results.filter((r) => r.ok).sort((a, b) => (b.seconds ?? 0) - (a.seconds ?? 0)).slice(0, 10);
  const tables = [...differing, ...slowest].sort((a, b) => a.table.localeCompare(b.table));
  return { tables, tablesChecked: results.length, rowsChecked, tablesOmitted: results.length - tables.length };
}

async function renewTransaction(client: Client, snapshot?: string): Promise<void> {
  await client.query('COMMIT');
  await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  if (snapshot) await client.query(`SET TRANSACTION SNAPSHOT ${literal(snapshot)}`);
}

async function openNormalized(info: ConnectionInfo, side: 'source' | 'target', snapshot?: string): Promise<Client> {
  const client = await connect(info, side, { applicationName: 'pgmove validate' });
  await normalizeSession(client);
  await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  if (snapshot) await client.query(`SET TRANSACTION SNAPSHOT ${literal(snapshot)}`);
  return client;
}

async function largeObjectDigest(client: Client): Promise<{ count: number; digest: string }> {
  const row = (
    await client.query<{ n: string; digest: string | null }>(
      `SELECT count(*) AS n, md5(string_agg(m.oid::text || ':' || md5(lo_get(m.oid)), ',' ORDER BY m.oid)) AS digest FROM pg_largeobject_metadata m`,
    )
  ).rows[0];
  return { count: Number(row?.n ?? 0), digest: row?.digest ?? '' };
}

/**
 * Schema objects in scope as comparable strings: relations with their kind, columns with their type,
 * indexes, constraints, triggers, routines, types. Names and types only: definitions are printed
 * differently by different majors. pgmove's own scratch schema (the copy's comparisons) is not compared.
 */
async function schemaObjects(client: Client, spec: MigrationSpec): Promise<Set<string>> {
  const { include, exclude } = spec;
  // With a table filter, pg_dump dumps just those tables and what hangs on them (indexes, constraints,
  // triggers): compare exactly that. Partitioned parents named in include.tables count as in scope.
  const tableFiltered = include.tables.length > 0 || exclude.tables.length > 0;
  const tables = tableFiltered ? new Set((await listTables(client, spec, { sizes: false })).map(displayName)) : new Set<string>();
  const result = await client.query<{ kind: string; schema: string; rel: string | null; name: string }>(
    `WITH s AS (
       SELECT n.oid, n.nspname FROM pg_namespace n
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', '${SCRATCH_SCHEMA}') AND n.nspname NOT LIKE 'pg\\_%'
          AND (cardinality($1::text[]) = 0 OR n.nspname = ANY($1::text[])) AND NOT n.nspname = ANY($2::text[])),
     own AS (SELECT objid, classid FROM pg_depend WHERE deptype = 'e')
     SELECT 'relation:' || c.relkind::text AS kind, s.nspname AS schema, NULL AS rel, c.relname AS name
       FROM pg_class c JOIN s ON s.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c') AND (c.oid, 'pg_class'::regclass) NOT IN (SELECT objid, classid FROM own)
     UNION ALL
     SELECT 'column:' || format_type(a.atttypid, a.atttypmod), s.nspname, c.relname, a.attname
       FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN s ON s.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.attnum > 0 AND NOT a.attisdropped
        AND (c.oid, 'pg_class'::regclass) NOT IN (SELECT objid, classid FROM own)
     UNION ALL
     SELECT 'index', s.nspname, t.relname, c.relname
       FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid JOIN s ON s.oid = c.relnamespace
      WHERE (t.oid, 'pg_class'::regclass) NOT IN (SELECT objid, classid FROM own)
     UNION ALL
     -- A constraint the server derived from another (a partition's, or a key's to each partition of the
     -- table it references, level by level) is named by the server, differently across versions: it is
     -- compared by its root constraint's name and the relation it points to.
     SELECT 'constraint:' || k.contype::text, s.nspname, coalesce(t.relname, ty.typname),
            CASE WHEN k.conparentid = 0 THEN k.conname
                 ELSE format('derived from %s to %s', (WITH RECURSIVE up(oid, parent) AS (
                                                         SELECT p.oid, p.conparentid FROM pg_constraint p WHERE p.oid = k.conparentid
                                                         UNION ALL SELECT p.oid, p.conparentid FROM pg_constraint p JOIN up ON p.oid = up.parent)
                                                       SELECT r.conname FROM up JOIN pg_constraint r ON r.oid = up.oid WHERE up.parent = 0),
                             coalesce((SELECT format('%I.%I', fn.nspname, f.relname) FROM pg_class f JOIN pg_namespace fn ON fn.oid = f.relnamespace WHERE f.oid = k.confrelid), '-')) END
       FROM pg_constraint k JOIN s ON s.oid = k.connamespace
       LEFT JOIN pg_class t ON t.oid = k.conrelid LEFT JOIN pg_type ty ON ty.oid = k.contypid
      WHERE k.contype <> 'n'
     UNION ALL
     SELECT 'trigger', s.nspname, c.relname, g.tgname
       FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid JOIN s ON s.oid = c.relnamespace WHERE NOT g.tgisinternal
     UNION ALL
     SELECT 'routine:' || p.prokind::text, s.nspname, NULL, p.oid::regprocedure::text
       FROM pg_proc p JOIN s ON s.oid = p.pronamespace
      WHERE (p.oid, 'pg_proc'::regclass) NOT IN (SELECT objid, classid FROM own)
     UNION ALL
     SELECT 'type:' || t.typtype::text, s.nspname, NULL, t.typname
       FROM pg_type t JOIN s ON s.oid = t.typnamespace
      WHERE t.typtype IN ('e', 'd', 'r', 'm') AND (t.oid, 'pg_type'::regclass) NOT IN (SELECT objid, classid FROM own)`,
    [include.schemas, exclude.schemas],
  );
  const inScope = new Set([...tables, ...include.tables.filter((t) => !exclude.tables.includes(t))]);
  const objects = new Set<string>();
  for (const row of result.rows) {
    const relation = row.rel ?? (row.kind.startsWith('relation:') ? row.name : null);
    if (tableFiltered && (relation === null || !inScope.has(`${row.schema}.${relation}`))) continue;
    objects.add(`${row.kind} ${row.schema}.${row.rel ? `${row.rel}.` : ''}${row.name}`);
  }
  return objects;
}
