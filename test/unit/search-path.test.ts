/** Every session pgmove opens resolves names through pg_catalog first (see search-path.test.ts for the threat). */
import { clientConfig, libpqEnv, PINNED_SEARCH_PATH, type ConnectionInfo } from '../../src/pg/connect';

const info: ConnectionInfo = { host: 'db.example', port: 5432, database: 'app', user: 'mig', password: 'secret-pw' };

test('the pinned search_path is pg_catalog, then the session\'s own temporary schema only', () => {
  expect(PINNED_SEARCH_PATH).toBe('pg_catalog,pg_temp');
});

test('node-pg sessions pin it in the startup options (which win over role and database settings)', () => {
  for (const options of [{}, { replication: 'database' as const }, { applicationName: 'pgmove copy', statementTimeoutMs: 5000 }]) {
    expect(clientConfig(info, options).options).toMatch(/(^| )-c search_path=pg_catalog,pg_temp( |$)/);
  }
});

test('libpq child tools get it through PGOPTIONS', () => {
  expect(libpqEnv(info).PGOPTIONS).toMatch(/(^| )-c search_path=pg_catalog,pg_temp( |$)/);
});
