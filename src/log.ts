/** Structured logs (pino), scoped by phase and migration. Never pass secrets or URIs with passwords. */
import pino, { type Logger } from 'pino';
import { Context } from '@temporalio/activity';

export const rootLogger: Logger = pino({
  name: 'pgmove',
  level: process.env.PGMOVE_LOG_LEVEL ?? 'info',
  // Defence in depth: anything named like a secret is dropped from log records.
  redact: { paths: ['password', '*.password', 'PGPASSWORD', '*.PGPASSWORD'], remove: true },
});

/** Logger for an activity: carries the phase, workflow id and attempt when running inside one. */
export function activityLogger(phase: string): Logger {
  try {
    const info = Context.current().info;
    return rootLogger.child({ phase, migrationId: info.workflowExecution?.workflowId, attempt: info.attempt });
  } catch {
    return rootLogger.child({ phase });
  }
}
