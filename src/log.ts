/** Structured logs (pino), scoped by phase and migration. Never pass secrets or URIs with passwords. */
import pino, { type Logger, type LoggerOptions } from 'pino';
import { Context } from '@temporalio/activity';
import { scrubSecrets } from './secret-registry';

export const loggerOptions: LoggerOptions = {
  name: 'pgmove',
  level: process.env.PGMOVE_LOG_LEVEL ?? 'info',
  // Defence in depth: anything named like a secret is dropped from log records.
  redact: { paths: ['password', '*.password', 'PGPASSWORD', '*.PGPASSWORD'], remove: true },
  // Every secret value the worker resolved, wherever it appears in a line (an error a server echoed).
  hooks: { streamWrite: (line: string) => scrubSecrets(line) },
};

export const rootLogger: Logger = pino(loggerOptions);

/** Logger for an activity: carries the phase, workflow id and attempt when running inside one. */
export function activityLogger(phase: string): Logger {
  try {
    const info = Context.current().info;
    return rootLogger.child({ phase, migrationId: info.workflowExecution?.workflowId, attempt: info.attempt });
  } catch {
    return rootLogger.child({ phase });
  }
}
