/**
 * Deterministic names of the AWS resources one migration creates, and the tags that record
 * ownership. A retried activity finds what an earlier attempt made by these names and trusts it only
 * when it carries this migration's tag; cleanup deletes only what carries it. Pure (workflow-safe).
 */
export const OWNER_TAG = 'pgmove:migration-id';
export const MANAGED_BY_TAG = 'pgmove:managed-by';
/** On a DB instance a migration completed on or switched to: it is the product, cleanup never deletes it. */
export const COMPLETED_TAG = 'pgmove:completed';
export const SWITCHED_TAG = 'pgmove:switched-at';

/** Why an instance is the product (its tags), or undefined when it may be deleted. */
export function productMark(tags: { Key?: string; Value?: string }[] | undefined): string | undefined {
  const switched = tags?.find((tag) => tag.Key === SWITCHED_TAG)?.Value;
  if (switched !== undefined) return `the migration switched to it at ${switched} (tag ${SWITCHED_TAG})`;
  const completed = tags?.find((tag) => tag.Key === COMPLETED_TAG)?.Value;
  if (completed !== undefined) return `the migration completed on it at ${completed} (tag ${COMPLETED_TAG})`;
  return undefined;
}

/** The final snapshot's name: fixed for one instance (a retried deletion asks for the same), new for a later one of the same name. */
export function finalSnapshotName(instance: string, createdAt?: Date): string {
  const stamp = createdAt ? `-${createdAt.toISOString().replace(/[^0-9]/g, '').slice(0, 14)}` : '';
  return `${instance}-final${stamp}`;
}

export interface ProvisionNames {
  instance: string;
  securityGroup: string;
  subnetGroup: string;
  parameterGroup: string;
  dmsSubnetGroup: string;
  dmsInstance: string;
  dmsSourceEndpoint: string;
  dmsTargetEndpoint: string;
  dmsTask: string;
}

/** RDS/DMS identifier rules: letters, digits, hyphens; a letter first; no "--"; no trailing "-". */
function awsIdentifier(text: string, max: number): string {
  let name = text.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/-{2,}/g, '-');
  if (!/^[a-z]/.test(name)) name = `p-${name}`;
  return name.slice(0, max).replace(/-+$/, '');
}

/** Names derive from target.provision.identifier, else from the migration id (limited to 48 characters so every suffix fits 63). */
export function provisionNames(migrationId: string, identifier?: string): ProvisionNames {
  const base = identifier ?? awsIdentifier(`pgmove-${migrationId}`, 48);
  return {
    instance: base,
    securityGroup: `${base}-sg`,
    subnetGroup: `${base}-subnets`,
    parameterGroup: `${base}-params`,
    dmsSubnetGroup: `${base}-dms-subnets`,
    dmsInstance: `${base}-dms`,
    dmsSourceEndpoint: `${base}-dms-source`,
    dmsTargetEndpoint: `${base}-dms-target`,
    dmsTask: `${base}-dms-task`,
  };
}

export interface Tag {
  Key: string;
  Value: string;
}

export function ownershipTags(migrationId: string, extra: Record<string, string> = {}): Tag[] {
  return [
    ...Object.entries(extra).map(([Key, Value]) => ({ Key, Value })),
    { Key: OWNER_TAG, Value: migrationId },
    { Key: MANAGED_BY_TAG, Value: 'pgmove' },
  ];
}

/** 'ours' when tagged with this migration, 'other' when tagged by another migration, 'untagged' otherwise. */
export function ownership(tags: { Key?: string; Value?: string }[] | undefined, migrationId: string): 'ours' | 'other' | 'untagged' {
  const owner = tags?.find((tag) => tag.Key === OWNER_TAG)?.Value;
  if (owner === undefined) return 'untagged';
  return owner === migrationId ? 'ours' : 'other';
}
