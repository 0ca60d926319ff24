/** The stall line `pgmove status` prints: who blocks whom, or what silence was seen. */
import { describeBlocker, summarizeStall, type OwnSession } from '../../src/stall';

const blocked: OwnSession = {
  side: 'target', pid: 4242, state: 'active', waitEventType: 'Lock', waitEvent: 'relation', queryStart: '2026-12-01T05:00:01Z', waitingFor: 'public.orders',
  blockers: [{ pid: 777, user: 'app', application: 'psql', state: 'idle in transaction', stateSince: '2026-12-01T05:00:00Z', transactionStart: '2026-12-01T04:59:00Z', query: 'LOCK TABLE\n  orders' }],
};

test('a lock wait names the blocking pid, its user, state, since when and query', () => {
  expect(summarizeStall(42, [blocked], [], 'no bytes from the source')).toBe(
    'stalled 42 s: target session 4242 waits for a lock on public.orders held by pid 777 (user app, application psql, idle in transaction since 2026-12-01T05:00:00Z, transaction started 2026-12-01T04:59:00Z, query: LOCK TABLE orders)',
  );
});

test('silence says what was seen; a prepared transaction is named as such', () => {
  expect(summarizeStall(30, [], ['source session 12 is gone (connection lost)'], 'no bytes from the source')).toBe(
    'stalled 30 s: no bytes from the source (source session 12 is gone (connection lost))',
  );
  expect(describeBlocker({ pid: 0, user: null, application: null, state: null, stateSince: null, transactionStart: null, query: null })).toBe('a prepared transaction (see pg_prepared_xacts)');
});
