/**
 * Keeps the source's password, which CREATE SUBSCRIPTION must carry in its connection string, out of
 * the target server's log and statistics. PostgreSQL writes a statement's text when it fails
 * (log_min_error_statement, default `error`), when it is DDL (log_statement = ddl, mod or all), when it
 * ran long or was sampled (log_min_duration_statement/_sample, log_transaction_sample_rate), and
 * pg_stat_statements keeps utility statements' text (track_utility, default on); pgaudit logs DDL.
 * Every one of these is superuser-settable (PGC_SUSET; from PostgreSQL 15 also with `GRANT SET ON
 * PARAMETER`). So, inside the transaction that runs the statement, each unsafe one is turned off with
 * SET LOCAL when the role may; when it may not, pre-flight refuses with the fix, and the statement is
 * never sent.
 */
import { ApplicationFailure } from '@temporalio/common';
import type { Client } from 'pg';
import { ident } from './sql';

interface Rule {
  name: string;
  /** The value SET LOCAL gives it. */
  quiet: string;
  /** Whether the effective value already keeps the statement's text out (`all` holds every rule's setting). */
  safe: (value: string, all: Map<string, string>) => boolean;
  /** How to make it safe without a superuser, for the refusal. */
  fix: string;
}

const RULES: Rule[] = [
  // mod logs DDL too: only none keeps CREATE SUBSCRIPTION out.
  { name: 'log_statement', quiet: 'none', safe: (v) => v === 'none', fix: 'log_statement = none' },
  // The statement fails at ERROR: only levels above it keep a failed statement's text out.
  { name: 'log_min_error_statement', quiet: 'panic', safe: (v) => ['log', 'fatal', 'panic'].includes(v), fix: 'log_min_error_statement = panic (or log, fatal)' },
  { name: 'log_min_duration_statement', quiet: '-1', safe: (v) => Number(v) < 0, fix: 'log_min_duration_statement = -1' },
  {
    name: 'log_min_duration_sample',
    quiet: '-1',
    safe: (v, all) => Number(v) < 0 || Number(all.get('log_statement_sample_rate') ?? 0) === 0,
    fix: 'log_min_duration_sample = -1',
  },
  { name: 'log_transaction_sample_rate', quiet: '0', safe: (v) => Number(v) === 0, fix: 'log_transaction_sample_rate = 0' },
  {
    name: 'pg_stat_statements.track_utility',
    quiet: 'off',
    safe: (v, all) => v === 'off' || all.get('pg_stat_statements.track') === 'none',
    fix: 'pg_stat_statements.track_utility = off',
  },
  {
    name: 'pgaudit.log',
    quiet: 'none',
    safe: (v) => !v.toLowerCase().split(',').map((c) => c.trim()).some((c) => c === 'all' || c === 'ddl'),
    fix: "pgaudit.log without 'ddl' and 'all'",
  },
];

/** Not needed for safety but hiding the text where the role may: pg_stat_activity while it runs, a bare duration line. */
const BEST_EFFORT: { name: string; quiet: string }[] = [
  { name: 'track_activities', quiet: 'off' },
  { name: 'log_duration', quiet: 'off' },
];

const NAMES = [...RULES.map((r) => r.name), 'log_statement_sample_rate', 'pg_stat_statements.track', ...BEST_EFFORT.map((b) => b.name)];

interface Setting {
  value: string;
  settable: boolean;
}

async function readSettings(target: Client): Promise<{ major: number; settings: Map<string, Setting> }> {
  const major = Math.floor(Number((await target.query<{ v: string }>(`SELECT current_setting('server_version_num') AS v`)).rows[0]!.v) / 10000);
  // has_parameter_privilege (PostgreSQL 15+) is true for superusers and for roles granted SET ON PARAMETER.
  const rows = (
    await target.query<{ name: string; setting: string; settable: boolean }>(
      `SELECT name, setting,
              (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) OR context = 'user'
              ${major >= 15 ? `OR has_parameter_privilege(name, 'SET')` : ''} AS settable
         FROM pg_settings WHERE name = ANY($1)`,
      [NAMES],
    )
  ).rows;
  return { major, settings: new Map(rows.map((r) => [r.name, { value: r.setting, settable: r.settable }])) };
}

export interface UnsafeSetting {
  name: string;
  value: string;
  fix: string;
}

/** The settings that would let the target log the statement's text and that this role may not change. */
export async function unsafeStatementLogging(target: Client): Promise<UnsafeSetting[]> {
  const { settings } = await readSettings(target);
  const values = new Map([...settings].map(([name, s]) => [name, s.value]));
  return RULES.filter((rule) => {
    const setting = settings.get(rule.name);
    return setting && !rule.safe(setting.value, values) && !setting.settable;
  }).map((rule) => ({ name: rule.name, value: settings.get(rule.name)!.value, fix: rule.fix }));
}

/** What pre-flight says when the role cannot keep the statement out of the log: the settings and both ways out. */
export function statementLoggingBlocker(unsafe: UnsafeSetting[], user: string, major: number): { detail: string; fix: string } {
  const names = unsafe.map((u) => u.name);
  return {
    detail: `the target would write the source's password (in CREATE SUBSCRIPTION's connection string) to its log or statistics, and ${user} may not turn that off for its session: ${unsafe.map((u) => `${u.name} = ${u.value}`).join(', ')}`,
    fix:
      `set ${unsafe.map((u) => u.fix).join(', ')} on the target for the migration (postgresql.conf / ALTER SYSTEM and reload; on RDS in the DB parameter group — they apply without a reboot)` +
      (major >= 15 ? `, or let ${user} set them for its session: GRANT SET ON PARAMETER ${names.join(', ')} TO ${ident(user)};` : '') +
      ', or use a superuser in target.uri',
  };
}

/**
 * Inside a transaction block: turns off, for this transaction only, every setting that would expose the
 * next statement's text, then checks the effective values; throws (non-retryable) rather than let the
 * statement be logged.
 */
export async function quietStatementLogging(target: Client): Promise<void> {
  const { major, settings } = await readSettings(target);
  const values = new Map([...settings].map(([name, s]) => [name, s.value]));
  for (const rule of RULES) {
    const setting = settings.get(rule.name);
    if (setting && !rule.safe(setting.value, values) && setting.settable) await target.query(`SET LOCAL ${rule.name} = ${rule.quiet}`);
  }
  for (const { name, quiet } of BEST_EFFORT) if (settings.get(name)?.settable) await target.query(`SET LOCAL ${name} = ${quiet}`);
  const after = (await readSettings(target)).settings;
  const now = new Map([...after].map(([name, s]) => [name, s.value]));
  const unsafe = RULES.filter((rule) => after.has(rule.name) && !rule.safe(now.get(rule.name)!, now));
  if (unsafe.length) {
    const user = (await target.query<{ u: string }>('SELECT current_user AS u')).rows[0]!.u;
    const blocker = statementLoggingBlocker(unsafe.map((r) => ({ name: r.name, value: now.get(r.name)!, fix: r.fix })), user, major);
    throw ApplicationFailure.nonRetryable(`${blocker.detail}; ${blocker.fix}`, 'SecretWouldBeLogged');
  }
}

/** Hides the password (as given and as escaped in a conninfo) in a message that came back from a server or driver. */
export function redactPassword(text: string, password: string | undefined): string {
  if (!password) return text;
  const escaped = password.replace(/\\/g, '\\\\').replace(/'/g, "\\'");
  let out = text;
  for (const form of new Set([password, escaped, escaped.replace(/'/g, "''")])) out = out.split(form).join('***');
  return out;
}
