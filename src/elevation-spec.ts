/**
 * Spec of the privilege elevation ("privilege hack", docs/design.md, phase 2): `source.privilegeElevation`.
 * Pure (zod only): the workflow bundle imports the types.
 */
import { z } from 'zod';

/** A name pg_hba.conf can hold in double quotes, and a shell never sees (argv only). */
const K8S_NAME = /^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$/;

export const privilegeElevationSchema = z
  .object({
    /** false (default): only check; a gap fails pre-flight with the statements to run by hand. */
    allow: z.boolean().default(false),
    /** Where the source server runs: `local` (a host shell on the worker's machine) or `kubectl` (a pod). */
    backend: z.enum(['local', 'kubectl']),
    /** The server's OS user; default: the owner of its data directory. */
    osUser: z.string().regex(/^[a-z_][a-z0-9_.-]*$/i, 'must be an OS user name like postgres').optional(),
    /** The role used over the local socket to grant; default: the bootstrap superuser (postgres in most images). */
    superuser: z.string().min(1).optional(),
    /** psql where the server runs (it connects over the server's unix socket). */
    psql: z.string().min(1).default('psql'),
    /** Overrides for unusual layouts; default: found from the running postmaster. */
    hbaFile: z.string().startsWith('/', 'must be an absolute path').optional(),
    dataDirectory: z.string().startsWith('/', 'must be an absolute path').optional(),
    kubectl: z
      .object({
        context: z.string().min(1).optional(),
        namespace: z.string().regex(K8S_NAME, 'must be a Kubernetes namespace name'),
        pod: z.string().regex(K8S_NAME, 'must be a pod name'),
        container: z.string().regex(K8S_NAME, 'must be a container name').optional(),
        /**
         * How a command acts as the server's OS user: `exec` when the container already runs as it
         * (bitnami: uid 1001), `runuser` when the container runs as root (runuser -u USER --).
         */
        runAs: z.enum(['exec', 'runuser']).default('exec'),
      })
      .strict()
      .optional(),
  })
  .strict()
  .refine((value) => value.backend !== 'kubectl' || value.kubectl !== undefined, {
    path: ['kubectl'],
    message: 'backend: kubectl needs kubectl: { namespace, pod } (and container when the pod has several)',
  });

export type PrivilegeElevationSpec = z.output<typeof privilegeElevationSchema>;

/** Whether the role was a member of a predefined role before pgmove touched it, and how. */
export interface MembershipBefore {
  member: boolean;
  /**
   * PostgreSQL 16+: the INHERIT option of the grant recorded as made by the bootstrap superuser (the
   * grant a superuser's GRANT/REVOKE acts on), when there was one. Absent: no such grant.
   */
  superuserGrantInherit?: boolean;
}

/** What the elevation changed, recorded in the workflow status (and on the server, next to pg_hba.conf). */
export interface ElevationRecord {
  /** false: the dump user already had what the method needs; nothing was changed. */
  elevated: boolean;
  reason: string;
  role: string;
  hbaFile?: string;
  backupFile?: string;
  stateFile?: string;
  osUser?: string;
  superuser?: string;
  /** The database the trust line names (the source's). */
  database?: string;
  /** The role's attributes before (rolsuper, rolreplication, rolinherit). */
  attributesBefore?: { superuser: boolean; replication: boolean; inherit?: boolean };
  /** The role's memberships in what pgmove granted, before it granted: the revert takes back only what it added. */
  membershipsBefore?: Record<string, MembershipBefore>;
  /** ALTER ROLE attributes pgmove set (e.g. SUPERUSER, REPLICATION) and memberships it granted. */
  attributesSet: string[];
  membershipsGranted: string[];
  /** The statements an operator would run by hand instead. */
  statements: string[];
  revertedAt?: string;
}
