/**
 * Copy generations of the logical method: how an online copy resumes after a crash instead of
 * starting again from zero. Generation g is one replication slot and the snapshot it exported; every
 * copy unit (a batch, a table, a key range) streams through its own publication, created before any
 * slot so that decoding — which reads publications as of each change — always finds it. When a unit
 * has been copied, its publication's comment records the generation whose snapshot it was copied at.
 * After a crash, units recorded at a generation whose slot still exists are kept; the others are
 * copied again at a new generation's slot. Generation g's subscription reads g's slot through the
 * publications of exactly the units copied at g, so every row gets the changes after its own snapshot
 * and nothing else. Everything is found again from the source's catalog: names, records, slots.
 */
import type { Client } from 'pg';
import type { CopyPlan, CopyUnit, CopyUnitResult, ReplicationNames } from '../model';
import { displayName, ident, literal, qualified } from './sql';
import { rangePredicate } from './table-copy';
import { replicationNames } from './replication';

/** Generation 0 keeps the names a migration always had (`replicationNames`); later ones add `_g<n>`. */
export function generationNames(migrationId: string, generation: number): ReplicationNames {
  const base = replicationNames(migrationId);
  if (generation === 0) return base;
  const name = `${base.slot}_g${generation}`;
  return { publication: base.publication, slot: name, subscription: name };
}

/** Unit publications are `<base>_u<n>`: the base ends in 8 hex digits, so no other migration's names match. */
function unitPublicationName(migrationId: string, index: number): string {
  return `${replicationNames(migrationId).publication}_u${index}`;
}

/** Regular expression (for SQL `~`) matching every slot, publication and subscription of the migration. */
export function ownNamePattern(migrationId: string): string {
  return `^${replicationNames(migrationId).slot}(_[gu][0-9]+)?$`;
}

/** The generation a slot or subscription name belongs to (undefined: a unit publication or another name). */
export function generationOfName(migrationId: string, name: string): number | undefined {
  const base = replicationNames(migrationId).slot;
  if (name === base) return 0;
  const match = new RegExp(`^${base}_g([0-9]+)$`).exec(name);
  return match ? Number(match[1]) : undefined;
}

/** Every replication object of the migration on the source (slots, publications), generation order. */
export async function ownSourceObjects(source: Client, migrationId: string): Promise<{ slots: string[]; publications: string[] }> {
  const pattern = ownNamePattern(migrationId);
  const slots = (await source.query<{ n: string }>(`SELECT slot_name AS n FROM pg_replication_slots WHERE slot_name ~ $1 ORDER BY 1`, [pattern])).rows.map((r) => r.n);
  // The main publication last: it holds the record of what the migration changed (restored when it goes).
  const publications = (await source.query<{ n: string }>(`SELECT pubname AS n FROM pg_publication WHERE pubname ~ $1 ORDER BY length(pubname) DESC, 1`, [pattern])).rows.map((r) => r.n);
  const byGeneration = (a: string, b: string) => (generationOfName(migrationId, a) ?? 0) - (generationOfName(migrationId, b) ?? 0);
  return { slots: slots.sort(byGeneration), publications };
}

/** The migration's subscriptions on the target (this database), generation order. */
export async function ownSubscriptions(target: Client, migrationId: string): Promise<string[]> {
  const rows = await target.query<{ n: string }>(
    `SELECT subname AS n FROM pg_subscription WHERE subname ~ $1 AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`,
    [ownNamePattern(migrationId)],
  );
  return rows.rows.map((r) => r.n).sort((a, b) => (generationOfName(migrationId, a) ?? 0) - (generationOfName(migrationId, b) ?? 0));
}

/** What a unit publication's comment holds: its units, and at which generation each was copied. */
interface UnitPublicationRecord {
  units: string[];
  copied: Record<string, { generation: number; result: CopyUnitResult }>;
}

interface UnitPublication extends UnitPublicationRecord {
  publication: string;
}

async function readUnitPublications(source: Client, migrationId: string): Promise<UnitPublication[]> {
  const rows = await source.query<{ n: string; c: string | null }>(
    `SELECT pubname AS n, obj_description(oid, 'pg_publication') AS c FROM pg_publication WHERE pubname ~ $1`,
    [`^${replicationNames(migrationId).publication}_u[0-9]+$`],
  );
  return rows.rows.map((row) => {
    try {
      const record = JSON.parse(row.c ?? '') as Partial<UnitPublicationRecord>;
      return { publication: row.n, units: record.units ?? [], copied: record.copied ?? {} };
    } catch {
      return { publication: row.n, units: [], copied: {} };
    }
  });
}

async function writeUnitRecord(source: Client, unit: UnitPublication): Promise<void> {
  const record: UnitPublicationRecord = { units: unit.units, copied: unit.copied };
  await source.query(`COMMENT ON PUBLICATION ${ident(unit.publication)} IS ${literal(JSON.stringify(record))}`);
}

/**
 * A key range can stream on its own only through a row filter (PostgreSQL 15+), and a row filter of a
 * publication that publishes UPDATE and DELETE must use replica-identity columns only — otherwise the
 * source would refuse the application's updates. Else the ranges of the table share one publication.
 */
async function rangeMayFilter(source: Client, major: number, unit: CopyUnit): Promise<boolean> {
  if (major < 15 || !unit.range) return false;
  const row = (
    await source.query<{ ok: boolean }>(
      `SELECT c.relreplident IN ('d', 'f') OR (c.relreplident = 'i' AND EXISTS (
                SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                 WHERE i.indrelid = c.oid AND i.indisreplident AND a.attname = $2)) AS ok
         FROM pg_class c WHERE c.oid = $1::regclass`,
      [qualified(unit.tables[0]!), unit.range.key],
    )
  ).rows[0];
  return row?.ok === true;
}

/**
 * Creates a publication for every unit of the plan that has none yet (an earlier attempt's records are
 * kept as they are: they define which units share a publication). Must run before a generation's slot.
 */
export async function ensureUnitPublications(source: Client, migrationId: string, plan: CopyPlan, major: number): Promise<void> {
  const existing = await readUnitPublications(source, migrationId);
  const covered = new Set(existing.flatMap((p) => p.units));
  let next = Math.max(0, ...existing.map((p) => Number(p.publication.slice(p.publication.lastIndexOf('_u') + 2)))) + 1;
  const shared = new Map<string, CopyUnit[]>();
  const groups: { units: CopyUnit[]; filter?: string }[] = [];
  for (const unit of plan.units.filter((u) => !covered.has(u.id))) {
    if (!unit.range || (await rangeMayFilter(source, major, unit))) {
      groups.push({ units: [unit], filter: unit.range ? rangePredicate(unit.range) : undefined });
      continue;
    }
    const table = displayName(unit.tables[0]!);
    if (!shared.has(table)) groups.push({ units: shared.set(table, []).get(table)! });
    shared.get(table)!.push(unit);
  }
  for (const group of groups) {
    const publication = unitPublicationName(migrationId, next++);
    const tables = group.units[0]!.range ? [group.units[0]!.tables[0]!] : group.units.flatMap((u) => u.tables);
    const list = tables.map((t) => `${qualified(t)}${group.filter ? ` WHERE (${group.filter})` : ''}`).join(', ');
    await source.query('BEGIN');
    try {
      await source.query(`CREATE PUBLICATION ${ident(publication)}${list ? ` FOR TABLE ${list}` : ''}`);
      await writeUnitRecord(source, { publication, units: group.units.map((u) => u.id), copied: {} });
      await source.query('COMMIT');
    } catch (error) {
      await source.query('ROLLBACK').catch(() => undefined);
      throw error;
    }
  }
}

/** One generation as the servers record it: its slot and the units copied at its snapshot. */
export interface LiveGeneration {
  generation: number;
  names: ReplicationNames;
  publications: string[];
  units: CopyUnitResult[];
}

/**
 * The generations whose copied units are kept: a publication's units all copied at one generation whose
 * slot still exists. Records of units that are not kept (a publication half copied, or copied at a
 * generation whose slot is gone) are cleared, so they are copied again.
 */
export async function liveGenerations(source: Client, migrationId: string): Promise<LiveGeneration[]> {
  const { slots } = await ownSourceObjects(source, migrationId);
  const slotGenerations = new Set(slots.map((s) => generationOfName(migrationId, s)));
  const live = new Map<number, LiveGeneration>();
  for (const unit of await readUnitPublications(source, migrationId)) {
    const copied = unit.units.map((id) => unit.copied[id]);
    const generations = new Set(copied.map((c) => c?.generation));
    const [generation] = [...generations];
    if (generations.size === 1 && generation !== undefined && slotGenerations.has(generation) && unit.units.length > 0) {
      if (!live.has(generation)) live.set(generation, { generation, names: generationNames(migrationId, generation), publications: [], units: [] });
      live.get(generation)!.publications.push(unit.publication);
      live.get(generation)!.units.push(...copied.map((c) => c!.result));
    } else if (Object.keys(unit.copied).length > 0) {
      await writeUnitRecord(source, { ...unit, copied: {} });
    }
  }
  return [...live.values()].sort((a, b) => a.generation - b.generation);
}

/** Serializes the records with the choice of a new generation (a stale attempt may still be copying). */
export async function withGenerationLock<T>(source: Client, migrationId: string, fn: () => Promise<T>): Promise<T> {
  const key = `pgmove generations ${replicationNames(migrationId).slot}`;
  await source.query('SELECT pg_advisory_lock(hashtextextended($1, 0))', [key]);
  try {
    return await fn();
  } finally {
    await source.query('SELECT pg_advisory_unlock(hashtextextended($1, 0))', [key]).catch(() => undefined);
  }
}

/**
 * Records that a unit was copied at the generation's snapshot (after its rows committed on the
 * target). Refused when the generation's slot is gone: a newer attempt has given it up.
 */
export async function recordUnitCopied(source: Client, migrationId: string, generation: number, result: CopyUnitResult): Promise<void> {
  const slot = generationNames(migrationId, generation).slot;
  await withGenerationLock(source, migrationId, async () => {
    const alive = (await source.query(`SELECT 1 FROM pg_replication_slots WHERE slot_name = $1`, [slot])).rowCount === 1;
    if (!alive) throw new Error(`slot ${slot} is gone: a newer attempt of the copy has started a new generation`);
    const unit = (await readUnitPublications(source, migrationId)).find((p) => p.units.includes(result.unitId));
    if (!unit) throw new Error(`copy unit ${result.unitId} has no publication of its own`);
    await writeUnitRecord(source, { ...unit, copied: { ...unit.copied, [result.unitId]: { generation, result } } });
  });
}
