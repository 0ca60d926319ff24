import { lsnToBigInt, replicationNames, subscriptionApplyOptions, subscriptionConninfo, createSubscriptionSql } from '../../src/pg/replication';
import { generationNames, generationOfName, ownNamePattern } from '../../src/pg/generations';
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

test('copy generations: generation 0 keeps the names, later ones and unit publications match only their own migration', () => {
  const id = 'x'.repeat(200);
  const base = replicationNames(id);
  expect(generationNames(id, 0)).toEqual(base);
  const g12 = generationNames(id, 12);
  expect(g12).toEqual({ publication: base.publication, slot: `${base.slot}_g12`, subscription: `${base.slot}_g12` });
  expect(`${base.publication}_u12345`.length).toBeLessThanOrEqual(63);
  expect([generationOfName(id, base.slot), generationOfName(id, g12.slot), generationOfName(id, `${base.slot}_u3`)]).toEqual([0, 12, undefined]);
  const pattern = new RegExp(ownNamePattern(id));
  expect([base.slot, g12.slot, `${base.slot}_u3`].every((name) => pattern.test(name))).toBe(true);
  // Another migration whose readable part extends this one's base never matches.
  const other = replicationNames(`${id.slice(0, 40)}_${base.slot.slice(-8)}_g1`);
  expect([other.slot, `${base.slot}_gx`, `${base.slot}_g1_u2`].some((name) => pattern.test(name))).toBe(false);
  expect(createSubscriptionSql(g12, 'host=h', { connect: true, enabled: true, publications: [`${base.publication}_u1`, `${base.publication}_u2`] })).toContain(
    `PUBLICATION "${base.publication}_u1", "${base.publication}_u2" WITH (create_slot = false, slot_name = '${g12.slot}'`,
  );
});

test('apply options: parallel streaming from PostgreSQL 16, binary only for built-in types, off explicit where the option exists', () => {
  expect(subscriptionApplyOptions(18, 'auto')).toEqual(['streaming = parallel']);
  expect(subscriptionApplyOptions(16, 'auto')).toEqual(['streaming = parallel']);
  expect(subscriptionApplyOptions(15, 'auto')).toEqual([]);
  // PostgreSQL 18 streams in parallel by default: off must say so.
  expect(subscriptionApplyOptions(18, 'off')).toEqual(['streaming = off']);
  expect(subscriptionApplyOptions(13, 'auto')).toEqual([]);
  expect(subscriptionApplyOptions(13, 'off')).toEqual([]);
  const sql = createSubscriptionSql(replicationNames('m'), 'host=h', { connect: true, enabled: true, apply: subscriptionApplyOptions(17, 'auto') });
  expect(sql).toMatch(/WITH \(create_slot = false, slot_name = '[a-z0-9_]+', copy_data = false, enabled = true, streaming = parallel\)$/);
  // Without a connection (no slot, no apply) the options are left out.
  expect(createSubscriptionSql(replicationNames('m'), 'host=h', { connect: false, enabled: false, apply: ['streaming = parallel'] })).toMatch(/WITH \(connect = false\)$/);
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
  expect(parseSpec(base).logical.applyStreaming).toBe('auto');
  expect(parseSpec({ ...base, logical: { applyStreaming: 'off' } }).logical.applyStreaming).toBe('off');
  expect(() => parseSpec({ ...base, logical: { applyStreaming: 'parallel' } })).toThrow(/applyStreaming/);
});
