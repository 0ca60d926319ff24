/**
 * `aws-secretsmanager:ARN[#jsonKey]` password references, resolved inside activities: the secret's
 * region comes from its ARN; endpoint and credentials from the worker's AWS configuration (its
 * environment, e.g. AWS_ENDPOINT_URL for a local emulator). RDS-managed master secrets are JSON with
 * `username` and `password`: reference them as ARN#password.
 */
import { GetSecretValueCommand } from '@aws-sdk/client-secrets-manager';
import { ApplicationFailure } from '@temporalio/common';
import { secretsClientForArn } from './clients';
import { classifyAwsError } from './errors';

export const AWS_SECRET_PREFIX = 'aws-secretsmanager:';

export function awsSecretReference(arn: string, jsonKey?: string): string {
  return `${AWS_SECRET_PREFIX}${arn}${jsonKey ? `#${jsonKey}` : ''}`;
}

export async function resolveAwsSecret(reference: string, field: string): Promise<string> {
  const [arn, jsonKey] = reference.slice(AWS_SECRET_PREFIX.length).split('#', 2) as [string, string | undefined];
  const client = secretsClientForArn(arn);
  let text: string | undefined;
  try {
    text = (await client.send(new GetSecretValueCommand({ SecretId: arn }))).SecretString;
  } catch (error) {
    throw classifyAwsError(error, `reading secret ${arn}`, field);
  } finally {
    client.destroy();
  }
  if (text === undefined) throw ApplicationFailure.nonRetryable(`${field}: secret ${arn} has no string value (binary secrets are not supported)`, 'SecretNotFound');
  if (jsonKey === undefined) return text;
  let value: unknown;
  try {
    value = (JSON.parse(text) as Record<string, unknown>)[jsonKey];
  } catch {
    throw ApplicationFailure.nonRetryable(`${field}: secret ${arn} is not JSON, so #${jsonKey} cannot be read: drop "#${jsonKey}" from the reference`, 'SecretNotFound');
  }
  if (typeof value !== 'string') throw ApplicationFailure.nonRetryable(`${field}: secret ${arn} has no string key "${jsonKey}"`, 'SecretNotFound');
  return value;
}
