/**
 * The AWS steps of migrateDatabase: provisionTarget before pre-flight (the rest of the workflow then
 * runs against the new instance's data path), and the release of what the migration created at its
 * end. Deterministic code only.
 */
import { CancellationScope, proxyActivities } from '@temporalio/workflow';
import type { Duration } from '@temporalio/common';
import type * as activities from '../activities';
import type { MigrationSpecInput } from '../src/spec';
import { OWED, type MigrationStatus } from '../src/model';
import type { AwsCleanupInput } from '../activities/cleanup-aws';
import type { DeprovisionResult } from '../src/aws/model';
import { durationMs } from '../src/units';
import { errorMessage } from '../src/error-text';

function provisionActivities(input: MigrationSpecInput) {
  const provision = input.target.provision;
  const waits = durationMs(provision?.availableTimeout ?? '60m') + durationMs(provision?.connectTimeout ?? '10m');
  return proxyActivities<typeof activities>({
    startToCloseTimeout: waits + 15 * 60_000,
    heartbeatTimeout: (input.timeouts?.heartbeat ?? '60s') as Duration,
    retry: { maximumAttempts: input.retries?.maximumAttempts ?? 10, initialInterval: '2s', maximumInterval: '1m' },
  });
}

/**
 * target.provision: creates (or finds again, after a crash) the RDS instance and returns the spec with
 * the target resolved to its data path; the password is the RDS-managed secret's reference.
 */
export async function provisionIfNeeded(
  input: MigrationSpecInput,
  migrationId: string,
  status: MigrationStatus,
  enterPhase: (phase: 'provisionTarget') => void,
): Promise<MigrationSpecInput> {
  if (!input.target.provision) return input;
  enterPhase('provisionTarget');
  status.cleanupOwed.push(OWED.aws);
  if (input.dryRun) {
    const planned = await provisionActivities(input).planProvisionTarget({ spec: input, migrationId });
    (status.warnings ??= []).push(`dry run: would create ${planned.join('; ')} — pre-flight of the target runs once it exists`);
    return input;
  }
  const provisioned = await provisionActivities(input).provisionTarget({ spec: input, migrationId });
  status.provisioned = provisioned;
  return { ...input, target: { uri: provisioned.uri, password: provisioned.passwordRef } };
}

/** What the AWS cleanup of this ending deletes (undefined: nothing was created), and what it keeps. */
export interface AwsCleanupRequest {
  request: AwsCleanupInput;
  provisioning: boolean;
  keep: boolean;
  keepInstance: boolean;
}

/** A switch or a completion made the provisioned instance the product: tagged so, never deleted by any cleanup. */
export type TargetProduct = NonNullable<AwsCleanupInput['markTarget']>;

export function awsCleanupRequest(input: MigrationSpecInput, migrationId: string, status: MigrationStatus, keepInstance: boolean, product?: TargetProduct): AwsCleanupRequest | undefined {
  if (input.dryRun) return undefined;
  const provisioning = input.target.provision !== undefined && status.timings.provisionTarget !== undefined;
  const dms = input.method === 'dms' || status.method === 'dms';
  if (!provisioning && !dms) return undefined;
  const keep = keepInstance || input.target.provision?.keepTargetOnAbort === true;
  const request: AwsCleanupInput = {
    migrationId,
    aws: { region: input.aws?.region ?? 'us-east-1', endpoint: input.aws?.endpoint },
    identifier: input.target.provision?.identifier,
    dmsOnly: keep || !provisioning,
    ...(product && provisioning ? { markTarget: product } : {}),
  };
  return { request, provisioning, keep, keepInstance };
}

export function recordAwsCleanup(status: MigrationStatus, result: DeprovisionResult, { provisioning, keep, keepInstance }: AwsCleanupRequest): void {
  status.awsCleanup = {
    deleted: result.deleted,
    kept: [
      ...result.skipped,
      ...(result.finalSnapshots ?? []).map((snapshot) => `DB snapshot ${snapshot} (final snapshot of the deleted instance)`),
      ...(provisioning && keep ? [`DB instance ${status.provisioned?.instanceIdentifier ?? ''} and its groups (${keepInstance ? 'the migration completed or the target is kept for inspection' : 'keepTargetOnAbort'})`] : []),
    ],
  };
  // The same cleanup deletes the DMS resources (always) and the provisioned instance's.
  status.cleanupOwed = status.cleanupOwed.filter((owed) => owed !== OWED.aws && owed !== OWED.dms);
}

/**
 * At the end: DMS resources always go; the provisioned instance and its groups go too when the
 * migration did not complete (and the spec does not say keepTargetOnAbort). An instance the migration
 * completed on or switched to is tagged so (`product`, new runs only): no cleanup ever deletes it. Only
 * resources tagged with this migration's id are deleted. Retried for a while (an instance's deletion takes minutes).
 * The cleanup of runs started before the "independent-compensations" patch (see ./compensations).
 */
export async function releaseAwsResources(input: MigrationSpecInput, migrationId: string, status: MigrationStatus, keepInstance: boolean, publish: () => void): Promise<void> {
  const aws = awsCleanupRequest(input, migrationId, status, keepInstance);
  if (!aws) return;
  const { cleanupAwsResources } = proxyActivities<typeof activities>({
    startToCloseTimeout: '2h',
    heartbeatTimeout: '2m',
    retry: { maximumAttempts: 30, initialInterval: '5s', maximumInterval: '1m' },
  });
  await CancellationScope.nonCancellable(async () => {
    try {
      recordAwsCleanup(status, await cleanupAwsResources(aws.request), aws);
    } catch (error) {
      status.errors.push(`AWS cleanup failed; run \`pgmove cleanup ${migrationId}\`: ${errorMessage(error)}`);
    }
    publish();
  });
}
