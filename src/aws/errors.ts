/**
 * AWS API errors classified the way Temporal needs them: bad input (unknown subnet, invalid instance
 * class, missing permission, a name taken by someone else) becomes a non-retryable ApplicationFailure
 * naming the spec field and the fix; throttling, 5xx and network errors stay retryable.
 */
import { ApplicationFailure } from '@temporalio/common';
import { errorMessage } from '../error-text';

interface AwsErrorShape {
  name?: string;
  Code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
  $fault?: 'client' | 'server';
}

export function awsErrorCode(error: unknown): string {
  const e = error as AwsErrorShape;
  return e?.Code ?? e?.name ?? 'Error';
}

export function isAwsNotFound(error: unknown): boolean {
  return /NotFound|NotFoundFault|ResourceNotFound|\.NotFound$/.test(awsErrorCode(error));
}

const PERMISSION = /AccessDenied|UnauthorizedOperation|AuthFailure|InvalidClientTokenId|UnrecognizedClient|SignatureDoesNotMatch|ExpiredToken|InvalidAccessKeyId|MissingAuthenticationToken/;
const RETRYABLE = /Throttl|RequestLimitExceeded|TooManyRequests|ServiceUnavailable|InternalFailure|InternalError|RequestTimeout|SlowDown|PriorRequestNotComplete/;
/** States that pass: a resource still in use or changing (e.g. a security group while the instance's interfaces linger). */
const TRANSIENT_STATE = /DependencyViolation|InvalidDBInstanceState|InvalidDBSubnetGroupState|InvalidDBParameterGroupState|InvalidResourceStateFault|InvalidGroup\.InUse/;

/**
 * @param action what pgmove was doing, e.g. "creating the DB subnet group"
 * @param field the spec field the operator fixes, e.g. "target.provision.subnetIds"
 */
export function classifyAwsError(error: unknown, action: string, field: string): Error {
  if (error instanceof ApplicationFailure) return error;
  const e = error as AwsErrorShape;
  const code = awsErrorCode(error);
  const message = `${action}: ${code}: ${errorMessage(error)}`;
  const status = e?.$metadata?.httpStatusCode ?? 0;
  if (RETRYABLE.test(code) || TRANSIENT_STATE.test(code) || e?.$fault === 'server' || status >= 500) return new Error(message, { cause: error });
  if (PERMISSION.test(code)) {
    return ApplicationFailure.nonRetryable(
      `${message} — the worker's AWS identity lacks this permission (or its credentials are invalid): grant the IAM action named above to the role the pgmove worker runs as (see the README's IAM policy); credentials come from the worker's environment, never from the spec`,
      'AwsPermissionDenied',
    );
  }
  if (/InvalidSubnet/.test(code)) {
    return ApplicationFailure.nonRetryable(`${message} — fix ${field}: list existing subnets of one VPC in this region (aws ec2 describe-subnets)`, 'BadSpec');
  }
  if (/InvalidParameterValue|InvalidParameterCombination|InvalidParameter|ValidationError|MalformedQueryString|InvalidVPCNetworkState/.test(code)) {
    return ApplicationFailure.nonRetryable(`${message} — fix ${field} (e.g. an instance class this engine version and region offer: aws rds describe-orderable-db-instance-options --engine postgres)`, 'BadSpec');
  }
  if (isAwsNotFound(error) || /^Invalid.*\.(NotFound|Malformed)$/.test(code)) {
    return ApplicationFailure.nonRetryable(`${message} — fix ${field}: it names something that does not exist in this region`, 'BadSpec');
  }
  if (/Quota|LimitExceeded|InsufficientDBInstanceCapacity|StorageQuota/.test(code)) {
    return ApplicationFailure.nonRetryable(`${message} — raise the account's quota or choose another instance class/region (${field})`, 'AwsQuota');
  }
  // Other client errors (4xx) are not fixed by retrying either.
  if (e?.$fault === 'client' || (status >= 400 && status < 500)) return ApplicationFailure.nonRetryable(`${message} (${field})`, 'AwsClientError');
  return new Error(message, { cause: error });
}

/** Wraps one AWS call: errors are classified with the action and the spec field that fixes them. */
export async function awsCall<T>(action: string, field: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    throw classifyAwsError(error, action, field);
  }
}
