/**
 * AWS SDK v3 clients for pgmove's activities and CLI. Region and an optional endpoint override come
 * from the spec (`aws: { region, endpoint }`); credentials never do: the SDK's default provider chain
 * (environment, shared profile, web identity / IRSA, instance or task role) supplies them.
 */
import { RDSClient } from '@aws-sdk/client-rds';
import { EC2Client } from '@aws-sdk/client-ec2';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { DatabaseMigrationServiceClient } from '@aws-sdk/client-database-migration-service';

export interface AwsTarget {
  region: string;
  endpoint?: string;
}

export interface AwsClients {
  rds: RDSClient;
  ec2: EC2Client;
  secrets: SecretsManagerClient;
  dms: DatabaseMigrationServiceClient;
  region: string;
  destroy(): void;
}

function config(target: AwsTarget) {
  // The SDK retries throttling and 5xx itself a few times; Temporal's retry policy covers longer outages.
  return { region: target.region, maxAttempts: 4, ...(target.endpoint ? { endpoint: target.endpoint } : {}) };
}

export function awsClients(target: AwsTarget): AwsClients {
  const rds = new RDSClient(config(target));
  const ec2 = new EC2Client(config(target));
  const secrets = new SecretsManagerClient(config(target));
  const dms = new DatabaseMigrationServiceClient(config(target));
  return {
    rds,
    ec2,
    secrets,
    dms,
    region: target.region,
    destroy: () => [rds, ec2, secrets, dms].forEach((client) => client.destroy()),
  };
}

/** Runs fn with fresh clients and releases their sockets afterwards. */
export async function withAws<T>(target: AwsTarget, fn: (aws: AwsClients) => Promise<T>): Promise<T> {
  const aws = awsClients(target);
  try {
    return await fn(aws);
  } finally {
    aws.destroy();
  }
}

/** Secrets Manager client for a secret ARN: its region comes from the ARN; the endpoint from the worker's AWS configuration. */
export function secretsClientForArn(arn: string): SecretsManagerClient {
  const region = arn.split(':')[3];
  return new SecretsManagerClient({ region, maxAttempts: 4 });
}
