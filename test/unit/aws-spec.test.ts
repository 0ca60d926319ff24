/** The AWS parts of the spec (target.provision, endpointOverride, aws, dms), deterministic names, error classification. */
import { migrationIdFor, parseSpec, parseSpecInput } from '../../src/spec';
import { provisionNames, ownership, ownershipTags } from '../../src/aws/names';
import { classifyAwsError } from '../../src/aws/errors';
import { ApplicationFailure } from '@temporalio/common';
import { specProblems } from '../helpers/spec-problems';

const source = { uri: 'postgresql://metastore_user@10.0.0.5:5432/metastore', password: 'env:SOURCE_PASSWORD' };
const provision = { type: 'rds', engineVersion: '16', instanceClass: 'db.t4g.medium', allocatedStorageGB: 50, subnetIds: ['subnet-0a', 'subnet-0b'], allowedCidrs: ['10.0.0.0/16'] };

const problems = (input: unknown): string[] => specProblems(parseSpecInput, input);

test('target.provision is an alternative to target.uri: exactly one, no password, endpointOverride only with it', () => {
  const spec = parseSpecInput({ source, target: { provision, endpointOverride: { host: '127.0.0.1', port: 6543 } } });
  expect(spec.target.provision).toMatchObject({ storageType: 'gp3', keepTargetOnAbort: false, allowedSecurityGroupIds: [], availableTimeout: '60m' });
  expect(spec.aws).toEqual({ region: 'us-east-1' });
  expect(problems({ source, target: {} })).toEqual([expect.stringMatching(/^target: give exactly one of target\.uri .* and target\.provision/)]);
  expect(problems({ source, target: { uri: 'postgresql://u@h/db', provision } })).toEqual([expect.stringMatching(/exactly one/)]);
  expect(problems({ source, target: { provision, password: 'env:X' } })).toEqual([expect.stringMatching(/^target\.password: an instance pgmove provisions gets its master password from RDS/)]);
  expect(problems({ source, target: { uri: 'postgresql://u@h/db', endpointOverride: { host: 'h', port: 1 } } })).toEqual([expect.stringMatching(/^target\.endpointOverride: only with target\.provision/)]);
  // The activities' parse needs a resolved target: the workflow's provisionTarget phase resolves it.
  expect(() => parseSpec({ source, target: { provision } })).toThrow(/provisionTarget phase creates it/);
});

test('provision fields are checked with the fix in the message', () => {
  const found = problems({ source, target: { provision: { ...provision, instanceClass: 't3.micro', subnetIds: ['subnet-0a'], allowedCidrs: [], allocatedStorageGB: 5, identifier: '9bad--name' } } });
  expect(found).toEqual(
    expect.arrayContaining([
      expect.stringMatching(/^target\.provision\.instanceClass: must be an RDS instance class like db\.t4g\.medium/),
      expect.stringMatching(/^target\.provision\.subnetIds: list subnets in at least two availability zones/),
      expect.stringMatching(/^target\.provision\.allowedCidrs: nothing could reach the new instance/),
      expect.stringMatching(/^target\.provision\.allocatedStorageGB: RDS for PostgreSQL needs at least 20 GB/),
      expect.stringMatching(/^target\.provision\.identifier: must be 2–48 letters/),
    ]),
  );
  expect(problems({ source, target: { provision: { ...provision, tags: { 'pgmove:migration-id': 'x' } } } })).toEqual([expect.stringMatching(/reserved/)]);
});

test('aws-secretsmanager references are accepted; method dms needs its block', () => {
  const arn = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!db-1234-AbCdEf';
  expect(parseSpec({ source: { ...source, password: `aws-secretsmanager:${arn}#password` }, target: { uri: 'postgresql://u@h/db' } }).source.password).toBe(`aws-secretsmanager:${arn}#password`);
  expect(problems({ source: { ...source, password: 'aws-secretsmanager:not-an-arn' }, target: { uri: 'postgresql://u@h/db' } })).toEqual([expect.stringMatching(/^source\.password: must be a reference/)]);
  expect(problems({ source, target: { uri: 'postgresql://u@h/db' }, method: 'dms' })).toEqual([expect.stringMatching(/^method: method dms needs a dms: \{\.\.\.\} block/)]);
  expect(parseSpecInput({ source, target: { uri: 'postgresql://u@h/db' }, method: 'dms', dms: {} }).dms).toMatchObject({ lobMode: 'limited', lobMaxSizeKB: 32, tablesWithoutPrimaryKey: 'refuse' });
});

test('names derive from the migration id (or the identifier) and fit the AWS limits; ownership is read from tags', () => {
  const long = provisionNames(`Metastore_To_RDS--${'x'.repeat(100)}`);
  expect(long.instance).toMatch(/^pgmove-metastore-to-rds-x+$/);
  expect(long.instance.length).toBeLessThanOrEqual(48);
  expect(long.dmsSourceEndpoint.length).toBeLessThanOrEqual(63);
  expect(provisionNames('a', 'my-db')).toMatchObject({ instance: 'my-db', securityGroup: 'my-db-sg', subnetGroup: 'my-db-subnets', parameterGroup: 'my-db-params', dmsTask: 'my-db-dms-task' });
  expect(provisionNames('7up').instance).toBe('pgmove-7up');
  const tags = ownershipTags('m1', { team: 'data' });
  expect(ownership(tags, 'm1')).toBe('ours');
  expect(ownership(tags, 'm2')).toBe('other');
  expect(ownership([{ Key: 'Name', Value: 'x' }], 'm1')).toBe('untagged');
  expect(migrationIdFor({ source, target: { provision: { ...provision, identifier: 'meta-db' } } } as never)).toBe('pgmove-meta-db');
});

test('AWS errors: throttling and 5xx stay retryable; permission, bad parameter and not-found do not', () => {
  const err = (name: string, status: number, fault: 'client' | 'server' = status >= 500 ? 'server' : 'client') => Object.assign(new Error(`${name} happened`), { name, $fault: fault, $metadata: { httpStatusCode: status } });
  expect(classifyAwsError(err('Throttling', 400), 'x', 'f')).not.toBeInstanceOf(ApplicationFailure);
  expect(classifyAwsError(err('InternalFailure', 500), 'x', 'f')).not.toBeInstanceOf(ApplicationFailure);
  expect(classifyAwsError(err('DependencyViolation', 400), 'x', 'f')).not.toBeInstanceOf(ApplicationFailure);
  for (const [name, type] of [['AccessDenied', 'AwsPermissionDenied'], ['UnauthorizedOperation', 'AwsPermissionDenied'], ['InvalidParameterCombination', 'BadSpec'], ['InvalidSubnet', 'BadSpec'], ['DBSubnetGroupNotFoundFault', 'BadSpec']] as const) {
    const classified = classifyAwsError(err(name, 400), 'creating', 'target.provision.x') as ApplicationFailure;
    expect(classified).toBeInstanceOf(ApplicationFailure);
    expect([classified.type, classified.nonRetryable]).toEqual([type, true]);
  }
});
