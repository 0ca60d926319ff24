/**
 * Finding a migration's DMS resources by their deterministic identifiers: one describe per kind, used
 * by the DMS phase (create, follow, stop) and by the AWS cleanup. DMS describes answer
 * ResourceNotFoundFault for an empty filter result, so "not found" is an empty list here; other errors
 * (permissions) are classified against the spec field the caller names.
 */
import {
  DescribeEndpointsCommand,
  DescribeReplicationInstancesCommand,
  DescribeReplicationSubnetGroupsCommand,
  DescribeReplicationTasksCommand,
  type Endpoint,
  type ReplicationInstance,
  type ReplicationSubnetGroup,
  type ReplicationTask,
} from '@aws-sdk/client-database-migration-service';
import type { AwsClients } from './clients';
import { awsCall, isAwsNotFound } from './errors';

/** The filter naming one task (also what the SDK's task waiters take). */
export const dmsTaskFilter = (id: string) => ({ Filters: [{ Name: 'replication-task-id', Values: [id] }] });
/** The filter naming one replication instance (also what the SDK's instance waiters take). */
export const dmsInstanceFilter = (id: string) => ({ Filters: [{ Name: 'replication-instance-id', Values: [id] }] });
const endpointFilter = (id: string) => ({ Filters: [{ Name: 'endpoint-id', Values: [id] }] });
const subnetGroupFilter = (id: string) => ({ Filters: [{ Name: 'replication-subnet-group-id', Values: [id] }] });

async function dmsList<T>(field: string, describe: () => Promise<T[] | undefined>): Promise<T[]> {
  try {
    return (await describe()) ?? [];
  } catch (error) {
    if (isAwsNotFound(error)) return [];
    return awsCall('describing DMS resources', field, () => Promise.reject(error));
  }
}

export function describeDmsTasks(aws: AwsClients, id: string, field: string): Promise<ReplicationTask[]> {
  return dmsList(field, () => aws.dms.send(new DescribeReplicationTasksCommand(dmsTaskFilter(id))).then((r) => r.ReplicationTasks));
}

export function describeDmsInstances(aws: AwsClients, id: string, field: string): Promise<ReplicationInstance[]> {
  return dmsList(field, () => aws.dms.send(new DescribeReplicationInstancesCommand(dmsInstanceFilter(id))).then((r) => r.ReplicationInstances));
}

export function describeDmsEndpoints(aws: AwsClients, id: string, field: string): Promise<Endpoint[]> {
  return dmsList(field, () => aws.dms.send(new DescribeEndpointsCommand(endpointFilter(id))).then((r) => r.Endpoints));
}

export function describeDmsSubnetGroups(aws: AwsClients, id: string, field: string): Promise<ReplicationSubnetGroup[]> {
  return dmsList(field, () => aws.dms.send(new DescribeReplicationSubnetGroupsCommand(subnetGroupFilter(id))).then((r) => r.ReplicationSubnetGroups));
}
