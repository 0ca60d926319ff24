import { ApplicationFailure } from '@temporalio/common';
import { assertSafeMigrationId, migrationIdProblem } from '../../src/migration-id';
import { childWorkflowId } from '../../src/cluster-spec';
import { workDirPath } from '../../src/pg/dump';

test('ids that name files and pg_hba.conf records safely pass', () => {
  for (const id of ['orders-prod', 'mig_2026.12.01', 'cluster-1.orders', 'a'.repeat(250)]) expect(migrationIdProblem(id)).toBeUndefined();
});

test('a newline, a slash, a backslash, a quote or a control character is refused with what to do', () => {
  for (const id of ['a\nb', '../x', 'a\\b', "it's", 'say "hi"', 'tab\there', 'nul\x00', '', 'a'.repeat(251)]) {
    expect(migrationIdProblem(id)).toBeDefined();
    let thrown: unknown;
    try {
      assertSafeMigrationId(id);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(ApplicationFailure);
    expect((thrown as ApplicationFailure).type).toBe('BadMigrationId');
    expect((thrown as ApplicationFailure).nonRetryable).toBe(true);
    expect((thrown as Error).message).toContain('nothing was written');
  }
  expect(() => workDirPath('../../etc')).toThrow(/migration id/);
});

test("a cluster child's id stays safe and distinct whatever the database is called", () => {
  expect(childWorkflowId('c1', 'orders')).toBe('c1.orders');
  const a = childWorkflowId('c1', 'we"ird/db\nname');
  const b = childWorkflowId('c1', "we'ird/db\nname");
  expect(migrationIdProblem(a)).toBeUndefined();
  expect(migrationIdProblem(b)).toBeUndefined();
  expect(a).not.toBe(b);
  expect(a.startsWith('c1.we_ird_db_name-')).toBe(true);
});
