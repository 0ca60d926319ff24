import { lsnToBigInt, replicationNames, subscriptionConninfo, createSubscriptionSql } from '../../src/pg/replication';
import { sizeBytes } from '../../src/units';
import { parseSpec } from '../../src/spec';

test('replication object names: valid slot names, stable, distinct for ids that differ only in punctuation', () => {
  const a = replicationNames('Metastore-To-RDS');
  const b = replicationNames('metastore_to_rds');
  expect(a.slot).toMatch(/^[a-z0-9_]{1,63}$/);
  expect(a).toEqual(replicationNames('Metastore-To-RDS'));
  expect(a.slot).not.toBe(b.slot);
  expect(replicationNames('x'.repeat(200)).slot.length).toBeLessThanOrEqual(63);
});

test('LSN arithmetic', () => {
  expect(lsnToBigInt('0/0')).toBe(0n);
  expect(lsnToBigInt('16/B374D848') - lsnToBigInt('16/B374D800')).toBe(0x48n);
  expect(lsnToBigInt('1/0')).toBe(1n << 32n);
});

test('the subscription conninfo quotes every value; the SQL literal escapes it again', () => {
  const conninfo = subscriptionConninfo({ host: 'db.example', port: 5432, database: "o'brien db", user: 'mig', password: "p'w\\d x" });
  expect(conninfo).toBe("host='db.example' port=5432 dbname='o\\'brien db' user='mig' password='p\\'w\\\\d x' application_name='pgmove' keepalives=1 keepalives_idle=30 keepalives_interval=10 keepalives_count=3");
  const sql = createSubscriptionSql(replicationNames('m'), conninfo, { connect: true, enabled: true });
  expect(sql).toContain('create_slot = false');
  expect(sql).toContain('copy_data = false');
  expect(sql).toMatch(/CONNECTION +E'host=/); // backslashes force the escape-string form
});

test('spec sizes and the cutover section', () => {
  expect(sizeBytes('16MB')).toBe(16 * 1024 * 1024);
  expect(sizeBytes(1000)).toBe(1000);
  const base = { source: { uri: 'postgresql://u@h/db' }, target: { uri: 'postgresql://u@h2/db' } };
  expect(() => parseSpec({ ...base, cutover: { freeze: 'hook' } })).toThrow(/freeze: hook needs both cutover.freezeHook and cutover.unfreezeHook/);
  expect(() => parseSpec({ ...base, logical: { walWarningBytes: '30GB' } })).toThrow(/must not be above logical.walLimitBytes/);
  expect(() => parseSpec({ ...base, cutover: { maxLagBytes: '16 megs' } })).toThrow(/cutover.maxLagBytes: .*size like/);
  expect(() => parseSpec({ ...base, cutover: { autoCutover: { at: 'tomorrow' } } })).toThrow(/ISO time/);
  expect(parseSpec({ ...base, method: 'logical' }).cutover).toMatchObject({ freeze: 'readOnly', maxLagBytes: '16MB', autoCutover: false });
});
