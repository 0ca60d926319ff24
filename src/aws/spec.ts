/**
 * The AWS parts of the migration spec: `aws` (region, endpoint override), `target.provision` (an RDS
 * instance pgmove creates) with `target.endpointOverride`, and `dms` (the AWS DMS method).
 * Pure (no Node built-ins): src/spec.ts composes these; the workflow bundle may import the types.
 */
import { z } from 'zod';

/** Where pgmove's AWS clients go. Credentials never come from the spec: the SDK's default chain (env, profile, IRSA, instance role). */
export const awsSchema = z
  .object({
    region: z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d$/, 'must be an AWS region like us-east-1').default('us-east-1'),
    /** An endpoint override for every AWS API call (e.g. http://127.0.0.1:5000 for moto, or a VPC endpoint). */
    endpoint: z.string().url('must be a URL like https://rds.eu-west-1.amazonaws.com or http://127.0.0.1:5000').optional(),
  })
  .strict();

const awsTags = z
  .record(z.string().min(1).max(128), z.string().max(256))
  .refine((tags) => Object.keys(tags).every((key) => !key.startsWith('pgmove:') && !key.startsWith('aws:')), 'tag keys starting with pgmove: or aws: are reserved (pgmove records ownership in pgmove:migration-id)');

const cidr = z.string().regex(/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/, 'must be an IPv4 CIDR like 10.0.0.0/16');

/** An RDS for PostgreSQL instance pgmove creates (the old build.sh), instead of `target.uri`. */
export const rdsProvisionSchema = z
  .object({
    type: z.literal('rds'),
    /** The DB instance identifier; default pgmove-<migration id>. Also the prefix of the security, subnet and parameter group names. */
    identifier: z
      .string()
      .regex(/^[a-zA-Z](?!.*--)[a-zA-Z0-9-]{0,52}[a-zA-Z0-9]$/, 'must be 2–48 letters, digits or hyphens, start with a letter, no "--", not end with "-" (RDS rules; pgmove adds suffixes for the groups and DMS resources)')
      .optional(),
    engineVersion: z.string().regex(/^\d+(\.\d+)?$/, 'must be a PostgreSQL version like 16 or 16.4'),
    instanceClass: z
      .string()
      .regex(/^db\.[a-z0-9-]+\.[a-z0-9]+$/, 'must be an RDS instance class like db.t4g.medium or db.m7g.large (with the "db." prefix)'),
    allocatedStorageGB: z.number().int().min(20, 'RDS for PostgreSQL needs at least 20 GB').max(65536),
    storageType: z.enum(['gp2', 'gp3', 'io1', 'io2']).default('gp3'),
    /** Subnets of one VPC in at least two availability zones (an RDS subnet group needs two). */
    subnetIds: z.array(z.string().regex(/^subnet-[0-9a-f]+$/, 'must be a subnet id like subnet-0abc123')).min(2, 'list subnets in at least two availability zones (RDS needs two for a subnet group)'),
    /** The VPC of the subnets; checked against them when given. */
    vpcId: z.string().regex(/^vpc-[0-9a-f]+$/, 'must be a VPC id like vpc-0abc123').optional(),
    /** PostgreSQL (5432) is allowed from these CIDRs and security groups; nothing else. */
    allowedCidrs: z.array(cidr).default([]),
    allowedSecurityGroupIds: z.array(z.string().regex(/^sg-[0-9a-f]+$/, 'must be a security group id like sg-0abc123')).default([]),
    /** Extra security groups attached to the instance besides the one pgmove creates. */
    securityGroupIds: z.array(z.string().regex(/^sg-[0-9a-f]+$/, 'must be a security group id like sg-0abc123')).default([]),
    /** DB parameter overrides (name → value), applied to the parameter group pgmove creates. */
    parameters: z.record(z.string().regex(/^[a-z_.]+$/, 'must be a parameter name like work_mem'), z.string()).default({}),
    tags: awsTags.default({}),
    /** Default: the source's database name and user (as the old build script did). */
    databaseName: z.string().regex(/^[A-Za-z][A-Za-z0-9_]{0,62}$/, 'must be a letter then letters, digits or "_" (RDS rules)').optional(),
    masterUsername: z.string().regex(/^[A-Za-z][A-Za-z0-9_]{0,15}$/, 'must be a letter then up to 15 letters, digits or "_" (RDS rules)').optional(),
    /** Keep what pgmove created when the migration is aborted or fails before the cutover. */
    keepTargetOnAbort: z.boolean().default(false),
    /** Wait for the instance to become available, and then for the data path to accept connections. */
    availableTimeout: z.string().regex(/^\d+(\.\d+)?\s*(ms|s|m|h|d)$/, 'must be a duration like 45m').default('60m'),
    connectTimeout: z.string().regex(/^\d+(\.\d+)?\s*(ms|s|m|h|d)$/, 'must be a duration like 10m').default('10m'),
  })
  .strict()
  .refine((p) => p.allowedCidrs.length + p.allowedSecurityGroupIds.length > 0, {
    path: ['allowedCidrs'],
    message: 'nothing could reach the new instance: list the worker\'s network in allowedCidrs (e.g. 10.0.0.0/16) or its security group in allowedSecurityGroupIds',
  });

/**
 * Connect the data path here instead of the instance's endpoint: for tests against moto (which runs
 * no database), or an SSH tunnel / bastion in front of a private instance. AWS calls still go to AWS.
 */
export const endpointOverrideSchema = z
  .object({
    host: z.string().min(1),
    port: z.number().int().min(1).max(65535),
    /** libpq sslmode for the override (default: none, e.g. a local tunnel end); the instance's own endpoint uses require. */
    sslmode: z.enum(['disable', 'prefer', 'require', 'verify-ca', 'verify-full']).optional(),
  })
  .strict();

/** Method dms: AWS DMS replicates (full load + CDC) between two RDS endpoints. */
export const dmsSchema = z
  .object({
    enabled: z.boolean().default(true),
    replicationInstanceClass: z.string().regex(/^dms\.[a-z0-9]+\.[a-z0-9]+$/, 'must be a DMS instance class like dms.t3.medium').default('dms.t3.medium'),
    allocatedStorageGB: z.number().int().min(5).max(6144).default(50),
    /** Subnets for the replication instance; default: target.provision.subnetIds. */
    subnetIds: z.array(z.string().regex(/^subnet-[0-9a-f]+$/, 'must be a subnet id like subnet-0abc123')).optional(),
    vpcSecurityGroupIds: z.array(z.string().regex(/^sg-[0-9a-f]+$/, 'must be a security group id like sg-0abc123')).default([]),
    /** Limited LOB mode truncates larger values silently: pre-flight measures the source and refuses (or raises it with lobMode full). */
    lobMaxSizeKB: z.number().int().min(1).max(102400).default(32),
    lobMode: z.enum(['limited', 'full']).default('limited'),
    /** Tables without a primary key lose UPDATE/DELETE under DMS CDC: refuse (default) or exclude them from the task. */
    tablesWithoutPrimaryKey: z.enum(['refuse', 'exclude']).default('refuse'),
    /** CDC latency (seconds) the cutover waits for after freezing the source. */
    maxCdcLatencySeconds: z.number().int().min(0).default(5),
    pollInterval: z.string().regex(/^\d+(\.\d+)?\s*(ms|s|m|h|d)$/, 'must be a duration like 15s').default('15s'),
  })
  .strict();

export type AwsSettings = z.output<typeof awsSchema>;
export type RdsProvision = z.output<typeof rdsProvisionSchema>;
export type EndpointOverride = z.output<typeof endpointOverrideSchema>;
export type DmsSettings = z.output<typeof dmsSchema>;
