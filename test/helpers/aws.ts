/**
 * AWS test helpers: a moto server per test file (real HTTP, started and stopped by pid), SDK clients
 * pointed at it, a VPC with two subnets in two zones, and reads of what exists there.
 */
import { join } from 'node:path';
import { CreateSubnetCommand, CreateVpcCommand, DescribeSecurityGroupsCommand, type SecurityGroup } from '@aws-sdk/client-ec2';
import { DescribeDBInstancesCommand, DescribeDBParameterGroupsCommand, DescribeDBSubnetGroupsCommand } from '@aws-sdk/client-rds';
import { ListSecretsCommand } from '@aws-sdk/client-secrets-manager';
import { startMotoServer, stopMotoServer, type MotoServerHandle } from '../../scripts/lib/moto-server';
import { awsClients, type AwsClients } from '../../src/aws/clients';
import type { TestStack } from './stack';
import { ALLOWED_SECRETS_VARIABLE, allowedSecretPatterns } from '../../src/secret-policy';

export const REGION = 'us-east-1';
/** moto accepts any credentials unless IAM enforcement is on; the SDK's default chain reads these. */
export const FAKE_CREDENTIALS = { AWS_ACCESS_KEY_ID: 'testing', AWS_SECRET_ACCESS_KEY: 'testing', AWS_REGION: REGION };

export interface Moto {
  server: MotoServerHandle;
  aws: AwsClients;
  /** Environment for workers: credentials, and the endpoint for secret references (AWS_ENDPOINT_URL). */
  workerEnv: NodeJS.ProcessEnv;
  stop(): Promise<void>;
}

export async function startMoto(stack: TestStack, name = 'moto', env?: NodeJS.ProcessEnv): Promise<Moto> {
  Object.assign(process.env, FAKE_CREDENTIALS);
  const server = await startMotoServer({ logFile: join(stack.dir, `${name}.log`), env });
  const aws = awsClients({ region: REGION, endpoint: server.endpoint });
  return {
    server,
    aws,
    // The operator of a worker that provisions RDS targets allows RDS-managed master secrets (README).
    workerEnv: { ...FAKE_CREDENTIALS, AWS_ENDPOINT_URL: server.endpoint, PGMOVE_AWS_POLL_MS: '200', [ALLOWED_SECRETS_VARIABLE]: [...allowedSecretPatterns(), 'aws-secretsmanager:arn:aws:secretsmanager:*:*:secret:rds!db-*'].join(',') },
    stop: async () => {
      aws.destroy();
      await stopMotoServer(server);
    },
  };
}

export async function createNetwork(aws: AwsClients): Promise<{ vpcId: string; subnetIds: string[] }> {
  const vpc = await aws.ec2.send(new CreateVpcCommand({ CidrBlock: '10.20.0.0/16' }));
  const vpcId = vpc.Vpc!.VpcId!;
  const subnetIds: string[] = [];
  for (const [i, zone] of ['us-east-1a', 'us-east-1b'].entries()) {
    const subnet = await aws.ec2.send(new CreateSubnetCommand({ VpcId: vpcId, CidrBlock: `10.20.${i}.0/24`, AvailabilityZone: zone }));
    subnetIds.push(subnet.Subnet!.SubnetId!);
  }
  return { vpcId, subnetIds };
}

export async function securityGroupsNamed(aws: AwsClients, name: string): Promise<SecurityGroup[]> {
  return (await aws.ec2.send(new DescribeSecurityGroupsCommand({ Filters: [{ Name: 'group-name', Values: [name] }] }))).SecurityGroups ?? [];
}

/** Every DB instance, DB subnet/parameter group, security group and secret whose name starts with prefix. */
export async function awsInventory(aws: AwsClients, prefix: string): Promise<string[]> {
  const found: string[] = [];
  for (const i of (await aws.rds.send(new DescribeDBInstancesCommand({}))).DBInstances ?? []) if (i.DBInstanceIdentifier?.startsWith(prefix)) found.push(`instance ${i.DBInstanceIdentifier}`);
  for (const g of (await aws.rds.send(new DescribeDBSubnetGroupsCommand({}))).DBSubnetGroups ?? []) if (g.DBSubnetGroupName?.startsWith(prefix)) found.push(`subnet-group ${g.DBSubnetGroupName}`);
  for (const g of (await aws.rds.send(new DescribeDBParameterGroupsCommand({}))).DBParameterGroups ?? []) if (g.DBParameterGroupName?.startsWith(prefix)) found.push(`parameter-group ${g.DBParameterGroupName}`);
  for (const g of (await aws.ec2.send(new DescribeSecurityGroupsCommand({}))).SecurityGroups ?? []) if (g.GroupName?.startsWith(prefix)) found.push(`security-group ${g.GroupName}`);
  return found.sort();
}

/** RDS-managed master secrets (names rds!db-...) in Secrets Manager. */
export async function managedSecrets(aws: AwsClients): Promise<string[]> {
  return ((await aws.secrets.send(new ListSecretsCommand({}))).SecretList ?? []).map((s) => s.ARN!).filter((arn) => arn.includes('rds!'));
}

/** Every string and decoded payload in an object tree (a workflow history). */
export function allText(value: unknown, out: string[] = []): string[] {
  if (value instanceof Uint8Array) out.push(Buffer.from(value).toString('utf8'));
  else if (typeof value === 'string') out.push(value);
  else if (value && typeof value === 'object') for (const v of Object.values(value)) allText(v, out);
  return out;
}
