/** TCP keepalives on every connection pgmove opens: node-pg configs, libpq child tools, the subscription. */
import { clientConfig, libpqConninfo, libpqEnv, type ConnectionInfo } from '../../src/pg/connect';
import { subscriptionConninfo } from '../../src/pg/replication';

const info: ConnectionInfo = { host: 'db.example', port: 5432, database: "it's a db", user: 'mig', password: 'secret-pw' };

test('node-pg connections keep alive (client side) and ask the server for keepalives too', () => {
  for (const options of [{}, { replication: 'database' as const }, { applicationName: 'pgmove copy', statementTimeoutMs: 5000 }]) {
    const config = clientConfig(info, options);
    expect(config.keepAlive).toBe(true);
    expect(config.keepAliveInitialDelayMillis).toBe(30_000);
    expect(config.options).toContain('-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3');
    // Lock waits stay unbounded on the server: the stall watchdog ends them, not a short lock_timeout.
    expect(config.options).toContain('-c lock_timeout=0');
  }
});

test('libpq child tools get keepalives in the conninfo and the environment, the password only in the environment', () => {
  const conninfo = libpqConninfo(info.database);
  expect(conninfo).toBe("dbname='it\\'s a db' keepalives=1 keepalives_idle=30 keepalives_interval=10 keepalives_count=3");
  expect(conninfo).not.toContain('secret-pw');
  const env = libpqEnv(info, 'pgmove post-data #2');
  expect(env.PGOPTIONS).toContain('-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3');
  expect(env.PGAPPNAME).toBe('pgmove post-data #2');
  expect(env.PGPASSWORD).toBe('secret-pw');
  expect(libpqEnv(info).PGAPPNAME).toBe('pgmove');
});

test('the subscription connection (opened by the target server) keeps alive too', () => {
  expect(subscriptionConninfo(info)).toMatch(/ keepalives=1 keepalives_idle=30 keepalives_interval=10 keepalives_count=3$/);
});
