/**
 * Resumable post-data: which entries of a post-data TOC the target already has. Every kind of entry
 * gets a probe: creating entries (indexes, constraints, triggers, rules, policies, statistics, event
 * triggers, publications and their tables or schemas) are found on the target by the identity of the
 * source object their catalog OID names; comments and security labels must also carry the source's
 * text; ROW SECURITY, INDEX ATTACH, DEFAULT ACL and MATERIALIZED VIEW DATA by their effect. An entry
 * is skipped only when its effect is there, so a retry re-creates nothing and misses nothing — and
 * runs no DDL at all after the last pass (event triggers) completed, which a DDL-blocking event
 * trigger would refuse.
 */
import type { Client } from 'pg';
import type { TocEntry } from './dump';

/** Catalog OIDs of what post-data creates (pg_class, pg_constraint, …). */
const CATALOG = {
  class: 1259,
  constraint: 2606,
  rewrite: 2618,
  trigger: 2620,
  policy: 3256,
  statisticExt: 3381,
  eventTrigger: 3466,
  defaultAcl: 826,
  publication: 6104,
  publicationRel: 6106,
  publicationNamespace: 6237,
} as const;

export interface ObjectRef {
  catalogOid: number;
  objectOid: number;
}

/** How to tell that a TOC entry's effect is already on the target. */
export type Probe =
  | { kind: 'object'; object: ObjectRef }
  | { kind: 'comment' | 'securityLabel'; parent: ObjectRef }
  | { kind: 'rowSecurity' | 'matviewData'; tableOid: number }
  | { kind: 'defaultAcl'; aclOid: number }
  | { kind: 'indexAttach'; description: string }
  /** Nothing to compare with (an ACL, an unknown kind): re-run; such statements are idempotent. */
  | { kind: 'rerun' };

/** The entry's text after "dumpId; catalog oid ": type, namespace, tag, owner. */
export function entryDescription(entry: TocEntry): string {
  return entry.line.replace(/^\d+; \d+ \d+ /, '');
}

/** One probe per entry. A comment or security label follows its object in the TOC (pg_dump writes it right after). */
export function resumeProbes(entries: TocEntry[]): Probe[] {
  let lastObject: { ref: ObjectRef; type: string } | undefined;
  return entries.map((entry): Probe => {
    const ref = { catalogOid: entry.catalogOid, objectOid: entry.objectOid };
    if (IDENTITY[entry.catalogOid] && entry.objectOid !== 0) {
      lastObject = { ref, type: entry.type };
      return { kind: 'object', object: ref };
    }
    if (entry.type === 'COMMENT' || entry.type === 'SECURITY LABEL') {
      // "COMMENT app INDEX t_a owner", "COMMENT - EVENT TRIGGER e owner": the object's type names the parent.
      const parentType = lastObject && objectTypeWord(lastObject.type);
      if (lastObject && parentType && entryDescription(entry).includes(` ${parentType} `)) {
        return { kind: entry.type === 'COMMENT' ? 'comment' : 'securityLabel', parent: lastObject.ref };
      }
      return { kind: 'rerun' };
    }
    lastObject = undefined;
    if (entry.type === 'ROW SECURITY' && entry.objectOid !== 0) return { kind: 'rowSecurity', tableOid: entry.objectOid };
    if (entry.type === 'MATERIALIZED VIEW DATA' && entry.objectOid !== 0) return { kind: 'matviewData', tableOid: entry.objectOid };
    if (entry.type === 'DEFAULT ACL' && entry.catalogOid === CATALOG.defaultAcl) return { kind: 'defaultAcl', aclOid: entry.objectOid };
    if (entry.type === 'INDEX ATTACH') return { kind: 'indexAttach', description: entryDescription(entry) };
    return { kind: 'rerun' };
  });
}

/** How COMMENT ON / SECURITY LABEL ON name the object of a TOC type. */
function objectTypeWord(type: string): string | undefined {
  if (type === 'FK CONSTRAINT' || type === 'CHECK CONSTRAINT') return 'CONSTRAINT';
  if (type === 'PUBLICATION TABLE' || type === 'PUBLICATION TABLES IN SCHEMA') return undefined; // no comments
  return type;
}

/** The entries whose effect is not on the target yet, in their order. */
export async function entriesMissingOnTarget(entries: TocEntry[], source: Client, target: Client): Promise<TocEntry[]> {
  const probes = resumeProbes(entries);
  const check = new PresenceCheck(source, target);
  const pending: TocEntry[] = [];
  for (const [i, entry] of entries.entries()) if (!(await check.present(probes[i]!))) pending.push(entry);
  return pending;
}

interface Identity {
  schema: string | null;
  rel: string | null;
  name: string;
}

/**
 * Per catalog: the identity of a source object by OID ($1), and the target object's OID by identity
 * ($1 schema, $2 table or other qualifier, $3 name). Names, never OIDs, match across servers.
 */
const IDENTITY: Record<number, { source: string; target: string }> = {
  [CATALOG.class]: {
    source: `SELECT n.nspname AS schema, NULL::text AS rel, c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1`,
    target: `SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND $2::text IS NULL AND c.relname = $3`,
  },
  // A constraint belongs to a table or (NOT VALID checks dumped apart) to a domain.
  [CATALOG.constraint]: {
    source: `SELECT n.nspname AS schema, CASE WHEN k.conrelid <> 0 THEN 'table ' || c.relname ELSE 'domain ' || t.typname END AS rel, k.conname AS name
               FROM pg_constraint k JOIN pg_namespace n ON n.oid = k.connamespace LEFT JOIN pg_class c ON c.oid = k.conrelid LEFT JOIN pg_type t ON t.oid = k.contypid
              WHERE k.oid = $1`,
    target: `SELECT k.oid FROM pg_constraint k JOIN pg_namespace n ON n.oid = k.connamespace LEFT JOIN pg_class c ON c.oid = k.conrelid LEFT JOIN pg_type t ON t.oid = k.contypid
              WHERE n.nspname = $1 AND CASE WHEN k.conrelid <> 0 THEN 'table ' || c.relname ELSE 'domain ' || t.typname END = $2 AND k.conname = $3`,
  },
  [CATALOG.trigger]: {
    source: `SELECT n.nspname AS schema, c.relname::text AS rel, t.tgname AS name FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE t.oid = $1`,
    target: `SELECT t.oid FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2 AND t.tgname = $3`,
  },
  [CATALOG.rewrite]: {
    source: `SELECT n.nspname AS schema, c.relname::text AS rel, r.rulename AS name FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace WHERE r.oid = $1`,
    target: `SELECT r.oid FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2 AND r.rulename = $3`,
  },
  [CATALOG.policy]: {
    source: `SELECT n.nspname AS schema, c.relname::text AS rel, p.polname AS name FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE p.oid = $1`,
    target: `SELECT p.oid FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2 AND p.polname = $3`,
  },
  [CATALOG.statisticExt]: {
    source: `SELECT n.nspname AS schema, NULL::text AS rel, s.stxname AS name FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace WHERE s.oid = $1`,
    target: `SELECT s.oid FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace WHERE n.nspname = $1 AND $2::text IS NULL AND s.stxname = $3`,
  },
  [CATALOG.eventTrigger]: {
    source: `SELECT NULL::name AS schema, NULL::text AS rel, evtname AS name FROM pg_event_trigger WHERE oid = $1`,
    target: `SELECT oid FROM pg_event_trigger WHERE $1::name IS NULL AND $2::text IS NULL AND evtname = $3`,
  },
  [CATALOG.publication]: {
    source: `SELECT NULL::name AS schema, NULL::text AS rel, pubname AS name FROM pg_publication WHERE oid = $1`,
    target: `SELECT oid FROM pg_publication WHERE $1::name IS NULL AND $2::text IS NULL AND pubname = $3`,
  },
  [CATALOG.publicationRel]: {
    source: `SELECT n.nspname AS schema, c.relname::text AS rel, p.pubname AS name FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid JOIN pg_class c ON c.oid = pr.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE pr.oid = $1`,
    target: `SELECT pr.oid FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid JOIN pg_class c ON c.oid = pr.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2 AND p.pubname = $3`,
  },
  [CATALOG.publicationNamespace]: {
    source: `SELECT n.nspname AS schema, NULL::text AS rel, p.pubname AS name FROM pg_publication_namespace pn JOIN pg_publication p ON p.oid = pn.pnpubid JOIN pg_namespace n ON n.oid = pn.pnnspid WHERE pn.oid = $1`,
    target: `SELECT pn.oid FROM pg_publication_namespace pn JOIN pg_publication p ON p.oid = pn.pnpubid JOIN pg_namespace n ON n.oid = pn.pnnspid WHERE n.nspname = $1 AND $2::text IS NULL AND p.pubname = $3`,
  },
};

/** The target's OID of the object a source OID names, or undefined when the target lacks it. */
async function targetOid(source: Client, target: Client, ref: ObjectRef): Promise<number | undefined> {
  const sql = IDENTITY[ref.catalogOid];
  if (!sql) return undefined;
  const identity = (await source.query<Identity>(sql.source, [ref.objectOid])).rows[0];
  if (!identity) return undefined;
  const row = (await target.query<{ oid: number }>(sql.target, [identity.schema, identity.rel, identity.name])).rows[0];
  return row?.oid;
}

const DESCRIPTION_SQL = `SELECT description FROM pg_description WHERE classoid = $1 AND objoid = $2 AND objsubid = 0`;
const LABELS_SQL = `SELECT coalesce(json_agg(json_build_array(provider, label) ORDER BY provider), '[]')::text AS labels FROM pg_seclabel WHERE classoid = $1 AND objoid = $2 AND objsubid = 0`;
const ROW_SECURITY_SQL = `SELECT relrowsecurity AS done FROM pg_class WHERE oid = $1`;
const POPULATED_SQL = `SELECT relispopulated AS done FROM pg_class WHERE oid = $1`;
const DEFAULT_ACL_SQL = `SELECT r.rolname, n.nspname, d.defaclobjtype::text AS objtype, d.defaclacl::text AS acl
  FROM pg_default_acl d JOIN pg_roles r ON r.oid = d.defaclrole LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace`;
const PARTITION_INDEXES_SQL = `SELECT n.nspname AS schema, c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('i', 'I') AND c.relispartition`;

/** Evaluates probes: source for what the dump means, target for what is already there. */
class PresenceCheck {
  private partitionIndexes?: { schema: string; name: string }[];

  constructor(
    private readonly source: Client,
    private readonly target: Client,
  ) {}

  async present(probe: Probe): Promise<boolean> {
    switch (probe.kind) {
      case 'object':
        return (await targetOid(this.source, this.target, probe.object)) !== undefined;
      case 'comment':
      case 'securityLabel': {
        const oid = await targetOid(this.source, this.target, probe.parent);
        if (oid === undefined) return false; // restored right after its object
        const sql = probe.kind === 'comment' ? DESCRIPTION_SQL : LABELS_SQL;
        const read = async (client: Client, objectOid: number) => JSON.stringify((await client.query(sql, [probe.parent.catalogOid, objectOid])).rows);
        // The catalog's OID (pg_class = 1259, …) is the same on every server.
        return (await read(this.source, probe.parent.objectOid)) === (await read(this.target, oid));
      }
      case 'rowSecurity':
      case 'matviewData': {
        const oid = await targetOid(this.source, this.target, { catalogOid: CATALOG.class, objectOid: probe.tableOid });
        if (oid === undefined) return false;
        const sql = probe.kind === 'rowSecurity' ? ROW_SECURITY_SQL : POPULATED_SQL;
        return (await this.target.query<{ done: boolean }>(sql, [oid])).rows[0]?.done === true;
      }
      case 'defaultAcl': {
        const wanted = (await this.source.query(`${DEFAULT_ACL_SQL} WHERE d.oid = $1`, [probe.aclOid])).rows[0] as Record<string, unknown> | undefined;
        if (!wanted) return false;
        const there = await this.target.query(`${DEFAULT_ACL_SQL} WHERE r.rolname = $1 AND n.nspname IS NOT DISTINCT FROM $2 AND d.defaclobjtype::text = $3`, [wanted.rolname, wanted.nspname, wanted.objtype]);
        return there.rows[0]?.acl === wanted.acl;
      }
      case 'indexAttach': {
        // "INDEX ATTACH <schema> <partition index> <owner>": names may hold spaces, so match the source's candidates.
        this.partitionIndexes ??= (await this.source.query<{ schema: string; name: string }>(PARTITION_INDEXES_SQL)).rows;
        const matches = this.partitionIndexes.filter((i) => probe.description.startsWith(`INDEX ATTACH ${i.schema} ${i.name} `));
        if (matches.length !== 1) return false;
        const { schema, name } = matches[0]!;
        const attached = await this.target.query(`${PARTITION_INDEXES_SQL} AND n.nspname = $1 AND c.relname = $2`, [schema, name]);
        return (attached.rowCount ?? 0) > 0;
      }
      case 'rerun':
        return false;
    }
  }
}
