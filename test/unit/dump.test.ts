import { conninfoForDatabase, dumpOptionArgs, parseTocList } from '../../src/pg/dump';
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

test('database names are quoted for libpq', () => {
  expect(conninfoForDatabase("it's a db")).toBe("dbname='it\\'s a db'");
});

test('list settings keep their elements; others are one literal', () => {
  expect(settingValueSql('search_path', '"$user", public, "Odd ""Schema"""')).toBe(`'$user', 'public', 'Odd "Schema"'`);
  expect(settingValueSql('work_mem', '8MB')).toBe(`'8MB'`);
  expect(settingValueSql('TimeZone', 'America/New_York')).toBe(`'America/New_York'`);
});
