/**
 * The reverse stream of a rollback window (cutover.rollbackWindow): after the switch, the new server
 * publishes every migrated table and the old server subscribes, so the old server stays a current copy
 * until `pgmove rollback` switches back or the window ends. Everything lives under one name derived from
 * the migration id (`<base>_rb`, which no forward pattern matches): the publication and the slot on the
 * new server, the subscription on the old one. The publication's comment is the record (known tables,
 * replica identities changed, the rollback's freeze and switch marks), like the forward publication's.
 */
import { ApplicationFailure } from '@temporalio/common';
import type { Client } from 'pg';
import type { ReplicationNames } from '../model';
import type { ConnectionInfo } from './connect';
import type { TableName } from './sql';
import { ident } from './sql';
import {
  createPublication,
  createSubscriptionSql,
  dropPublication,
  dropSlot,
  dropSubscription,
  replicationNames,
  slotState,
  subscriptionConninfo,
  subscriptionState,
  type SlotState,
  type SubscriptionState,
} from './replication';
import { quietStatementLogging, redactPassword } from './statement-privacy';
import { errorMessage } from '../error-text';

/** `<base>_rb`: 59 bytes at most (slot names allow 63). */
export function reverseNames(migrationId: string): ReplicationNames {
  const name = `${replicationNames(migrationId).slot}_rb`;
  return { publication: name, slot: name, subscription: name };
}

export interface ReverseStart {
  /** The migrated tables the new server publishes (logged ones: unlogged tables cannot be published). */
  tables: TableName[];
  /** Of those, the ones without a key: REPLICA IDENTITY FULL on the new server for the window (recorded, restored). */
  needFullIdentity: TableName[];
  /** The display names of every migrated table: any other table found on the new server later is new. */
  knownTables: string[];
  /** The new server as the old one reaches it (logical.targetUriFromSource, else target.uri). */
  newServerFromOld: ConnectionInfo;
}

/**
 * Creates the reverse stream; idempotent (a retry finds what an earlier attempt made). Runs while the old
 * server is frozen and before the switch, so every write the application makes on the new server comes
 * after the slot's consistent point. `oldServer` must allow writes in its session (it is fenced).
 */
export async function startReverseStream(oldServer: Client, newServer: Client, migrationId: string, start: ReverseStart): Promise<void> {
  const names = reverseNames(migrationId);
  await createPublication(newServer, names.publication, start.tables, start.needFullIdentity, start.knownTables);
  const slotExists = (await newServer.query(`SELECT 1 FROM pg_replication_slots WHERE slot_name = $1`, [names.slot])).rowCount === 1;
  if (!slotExists) await newServer.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [names.slot]);
  if ((await subscriptionState(oldServer, names.subscription)).exists) return;
  // One transaction (create_slot = false allows it): SET LOCAL keeps the statement, with the new server's
  // password in its connection string, out of the old server's log and statistics.
  await oldServer.query('BEGIN');
  try {
    await quietStatementLogging(oldServer);
    await oldServer.query(createSubscriptionSql(names, subscriptionConninfo(start.newServerFromOld), { connect: true, enabled: true }));
    await oldServer.query('COMMIT');
  } catch (error) {
    await oldServer.query('ROLLBACK').catch(() => undefined);
    // A refusal to log the password (SecretWouldBeLogged) is already final and redacted.
    if (error instanceof ApplicationFailure) throw error;
    throw reverseSubscriptionError(error, start.newServerFromOld);
  }
}

/** A CREATE SUBSCRIPTION error on the old server, without the new server's password, saying what to fix. */
function reverseSubscriptionError(error: unknown, newServerFromOld: ConnectionInfo): Error {
  const message = redactPassword(errorMessage(error), newServerFromOld.password);
  const unreachable = /could not connect to the publisher/i.test(message);
  if (unreachable) {
    // Final for this attempt: retrying inside the freeze cannot make the path appear.
    return ApplicationFailure.nonRetryable(
      `the source cannot connect to the target at ${newServerFromOld.host}:${newServerFromOld.port} for the rollback window's reverse stream (${message}); allow the source's address in the target's pg_hba.conf / security group, or set logical.targetUriFromSource`,
      'ReverseStreamFailed',
    );
  }
  const fixed = new Error(`creating the rollback window's reverse subscription on the source failed: ${message}`);
  fixed.name = 'ReverseStreamFailed';
  return fixed;
}

/** The reverse slot on the new server (undefined when gone or invalidated): lag and the WAL it holds there. */
export async function reverseSlotState(newServer: Client, migrationId: string): Promise<SlotState | undefined> {
  const slot = await slotState(newServer, reverseNames(migrationId).slot);
  return slot && slot.walStatus !== 'lost' ? slot : undefined;
}

/** The reverse subscription on the old server: whether its apply worker streams, and its apply errors. */
export async function reverseSubscriptionState(oldServer: Client, migrationId: string): Promise<SubscriptionState> {
  return subscriptionState(oldServer, reverseNames(migrationId).subscription);
}

/** Drops the subscription on the old server; idempotent. The caller's session must allow writes (the old server may be fenced). */
export async function dropReverseSubscription(oldServer: Client, migrationId: string): Promise<boolean> {
  return dropSubscription(oldServer, reverseNames(migrationId).subscription);
}

/** Drops the slot and the publication on the new server (restoring the replica identities it changed); idempotent. */
export async function dropReversePublisher(newServer: Client, migrationId: string): Promise<string[]> {
  const names = reverseNames(migrationId);
  const dropped: string[] = [];
  if (await dropSlot(newServer, names.slot)) dropped.push(`slot ${names.slot} on the new server`);
  if (await dropPublication(newServer, names.publication)) dropped.push(`publication ${names.publication} on the new server`);
  return dropped;
}

/** Enables or disables the reverse subscription (the rollback stops it after the drain, an abandoned one resumes it). */
export async function setReverseSubscriptionEnabled(oldServer: Client, migrationId: string, enabled: boolean): Promise<boolean> {
  const names = reverseNames(migrationId);
  const state = await subscriptionState(oldServer, names.subscription);
  if (!state.exists) return false;
  if (state.enabled !== enabled) await oldServer.query(`ALTER SUBSCRIPTION ${ident(names.subscription)} ${enabled ? 'ENABLE' : 'DISABLE'}`);
  return true;
}
