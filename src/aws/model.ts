/** AWS data that crosses the workflow/activity boundary. Types only; never a secret (secret ARNs are references). */

export type AwsResourceKind =
  | 'securityGroup'
  | 'dbSubnetGroup'
  | 'dbParameterGroup'
  | 'dbInstance'
  | 'replicationSubnetGroup'
  | 'replicationInstance'
  | 'dmsEndpoint'
  | 'replicationTask';

export interface AwsResource {
  kind: AwsResourceKind;
  /** Name or id (security group id, DB instance identifier, ...). */
  id: string;
  arn?: string;
  /** Properties worth showing: the ingress rule, the parameter values, the instance class. */
  detail?: string;
  /** Found from an earlier attempt (tagged as ours) rather than created now. */
  reused?: boolean;
}

export interface ProvisionedTarget {
  instanceIdentifier: string;
  region: string;
  /** The instance's own endpoint, as RDS reports it. */
  endpoint: { host: string; port: number };
  /** Where the data path connects: target.endpointOverride, else the endpoint. */
  dataPath: { host: string; port: number };
  /** postgresql://master@host:port/db — no password. */
  uri: string;
  /** aws-secretsmanager:ARN#password: the RDS-managed master secret, resolved by activities only. */
  passwordRef: string;
  resources: AwsResource[];
}

export interface DeprovisionResult {
  /** What was deleted (or, with dryRun, what would be). */
  deleted: AwsResource[];
  /** Found by name but not tagged as this migration's: never touched. */
  skipped: string[];
  dryRun: boolean;
  /** DB snapshots taken before deleting an instance (or, with dryRun, that would be). */
  finalSnapshots?: string[];
}

/** Method dms: what pre-flight measured and decided. */
export interface DmsPlan {
  /** Tables the task carries, and those left out (no primary key, with tablesWithoutPrimaryKey: exclude). */
  tables: string[];
  excludedTables: string[];
  /** Largest LOB value found on the source (bytes) and where. */
  maxLobBytes: number;
  maxLobColumn?: string;
  lobColumns: number;
}

/** A DMS task as its describe call reports it. */
export interface DmsProgress {
  status: string;
  fullLoadPercent: number;
  tablesLoaded: number;
  tablesLoading: number;
  tablesQueued: number;
  tablesErrored: number;
  lastFailure?: string;
}
