import { dumpOptionArgs, parseTocList } from '../../src/pg/dump';
import { resumeProbes } from '../../src/pg/post-data-resume';
import { settingValueSql } from '../../src/pg/database-settings';
import { parseSpec } from '../../src/spec';

const base = { source: { uri: 'postgresql://u@h/db' }, target: { uri: 'postgresql://u@h2/db' } };

test('filters become exact pg_dump patterns: quoted, so dots, stars and case are literal', () => {
  const spec = parseSpec({ ...base, include: { tables: ['public.my*table'] }, exclude: { schemas: ['Sales Data'], tables: ['odd.we"ird'] } });
  expect(dumpOptionArgs(spec, false)).toEqual(['--table="public"."my*table"', '--exclude-schema="Sales Data"', '--exclude-table="odd"."we""ird"', '--no-owner']);
  expect(dumpOptionArgs(spec, true)).toContain('-b');
});

test('dump options from the spec', () => {
  const spec = parseSpec({ ...base, dump: { noOwner: false, noPrivileges: true, extraArgs: ['--no-comments'] } });
  expect(dumpOptionArgs(spec, true)).toEqual(['--no-privileges', '--no-comments']);
});

test('pg_restore --list entries keep their line and multi-word types', () => {
  const entries = parseTocList([
    ';',
    '; Archive created at 2026-11-23',
    '3352; 2606 16412 CONSTRAINT public orders orders_pkey postgres',
    '3360; 1259 16420 INDEX public orders_customer_idx postgres',
    '3370; 2606 16430 FK CONSTRAINT public order_items order_items_order_id_fkey postgres',
    '3380; 0 16440 MATERIALIZED VIEW DATA public revenue_by_day postgres',
  ].join('\n'));
  expect(entries.map((e) => [e.dumpId, e.catalogOid, e.objectOid, e.type])).toEqual([
    [3352, 2606, 16412, 'CONSTRAINT'],
    [3360, 1259, 16420, 'INDEX'],
    [3370, 2606, 16430, 'FK CONSTRAINT'],
    [3380, 0, 16440, 'MATERIALIZED VIEW DATA'],
  ]);
  expect(entries[1]?.line).toBe('3360; 1259 16420 INDEX public orders_customer_idx postgres');
});

test('list settings keep their elements; others are one literal', () => {
  expect(settingValueSql('search_path', '"$user", public, "Odd ""Schema"""')).toBe(`'$user', 'public', 'Odd "Schema"'`);
  expect(settingValueSql('work_mem', '8MB')).toBe(`'8MB'`);
  expect(settingValueSql('TimeZone', 'America/New_York')).toBe(`'America/New_York'`);
});

test('every post-data entry kind gets a probe; comments and labels attach to the object just before them', () => {
  const entries = parseTocList(
    [
      '3222; 2606 16406 CHECK CONSTRAINT app u u_chk postgres',
      '3223; 1259 16407 INDEX app t_a postgres',
      '3400; 0 0 COMMENT app INDEX t_a postgres',
      '3231; 0 0 INDEX ATTACH app p1_k_idx postgres',
      '3403; 0 0 COMMENT app TRIGGER t_trg ON t postgres',
      '3234; 2620 16409 TRIGGER app t t_trg postgres',
      '3403; 0 0 COMMENT app TRIGGER t_trg ON t postgres',
      '3410; 0 0 SECURITY LABEL app TRIGGER t_trg ON t postgres',
      '3381; 0 16389 ROW SECURITY app t postgres',
      '3382; 3256 16417 POLICY app t t_pol postgres',
      '3383; 6104 16412 PUBLICATION - pd_pub postgres',
      '3406; 0 0 COMMENT - PUBLICATION pd_pub postgres',
      '3385; 6106 16413 PUBLICATION TABLE app pd_pub t postgres',
      '3387; 6237 16416 PUBLICATION TABLES IN SCHEMA app pd_pub2 app postgres',
      '3408; 0 0 COMMENT - PUBLICATION pd_pub postgres',
      '2057; 826 16433 DEFAULT ACL app DEFAULT PRIVILEGES FOR TABLES postgres',
      '3220; 3466 16411 EVENT TRIGGER - pd_evt postgres',
      '3407; 0 0 COMMENT - EVENT TRIGGER pd_evt postgres',
      '3391; 0 16420 MATERIALIZED VIEW DATA app mv postgres',
      '3392; 0 0 ACL app TABLE t postgres',
    ].join('\n'),
  );
  expect(entries.map((e) => e.type)).toEqual([
    'CHECK CONSTRAINT', 'INDEX', 'COMMENT', 'INDEX ATTACH', 'COMMENT', 'TRIGGER', 'COMMENT', 'SECURITY LABEL', 'ROW SECURITY', 'POLICY', 'PUBLICATION',
    'COMMENT', 'PUBLICATION TABLE', 'PUBLICATION TABLES IN SCHEMA', 'COMMENT', 'DEFAULT ACL', 'EVENT TRIGGER', 'COMMENT', 'MATERIALIZED VIEW DATA', 'ACL',
  ]);
  const object = (catalogOid: number, objectOid: number) => ({ catalogOid, objectOid });
  expect(resumeProbes(entries)).toEqual([
    { kind: 'object', object: object(2606, 16406) },
    { kind: 'object', object: object(1259, 16407) },
    { kind: 'comment', parent: object(1259, 16407) },
    { kind: 'indexAttach', description: 'INDEX ATTACH app p1_k_idx postgres' },
    // Not right after its trigger: nothing to compare with, so it runs again (COMMENT ON is idempotent).
    { kind: 'rerun' },
    { kind: 'object', object: object(2620, 16409) },
    { kind: 'comment', parent: object(2620, 16409) },
    { kind: 'securityLabel', parent: object(2620, 16409) },
    { kind: 'rowSecurity', tableOid: 16389 },
    { kind: 'object', object: object(3256, 16417) },
    { kind: 'object', object: object(6104, 16412) },
    { kind: 'comment', parent: object(6104, 16412) },
    { kind: 'object', object: object(6106, 16413) },
    { kind: 'object', object: object(6237, 16416) },
    // After a publication's table, not after the publication: no parent to compare.
    { kind: 'rerun' },
    { kind: 'defaultAcl', aclOid: 16433 },
    { kind: 'object', object: object(3466, 16411) },
    { kind: 'comment', parent: object(3466, 16411) },
    { kind: 'matviewData', tableOid: 16420 },
    { kind: 'rerun' },
  ]);
});
