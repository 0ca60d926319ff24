/** Which tables of a copy unit share a transaction on the target (src/pg/table-copy.ts, copyGroups). */
import { copyGroups, SMALL_TABLE_BYTES, SMALL_TABLES_PER_TRANSACTION } from '../../src/pg/table-copy';
import type { CopyTable } from '../../src/model';

const table = (name: string, bytes: number): CopyTable => ({ schema: 'public', name, columns: ['id'], binary: true, bytes });
const names = (groups: CopyTable[][]) => groups.map((g) => g.map((t) => t.name));

test('runs of small whole tables share a transaction, up to the limit; a larger table goes alone', () => {
  const small = Array.from({ length: SMALL_TABLES_PER_TRANSACTION + 5 }, (_, i) => table(`s${i}`, 8192));
  const groups = copyGroups([table('big0', SMALL_TABLE_BYTES), ...small.slice(0, 3), table('big1', 10 * SMALL_TABLE_BYTES), ...small.slice(3)], undefined);
  expect(names(groups)).toEqual([
    ['big0'],
    ['s0', 's1', 's2'],
    ['big1'],
    small.slice(3, 3 + SMALL_TABLES_PER_TRANSACTION).map((t) => t.name),
    small.slice(3 + SMALL_TABLES_PER_TRANSACTION).map((t) => t.name),
  ]);
});

test('a key range is never grouped', () => {
  expect(names(copyGroups([table('a', 10)], { key: 'id', lo: '1', hi: '5' }))).toEqual([['a']]);
});
