/**
 * What the Web UI shows as a migration's static summary and "Details" (set once, when the CLI starts
 * the workflow): where from and to, how, and the commands an operator needs next. Never a secret: URIs
 * carry no password (the spec refuses one) and passwords are references.
 */
import type { ParsedSpec } from '../spec';
import type { ClusterSpec } from '../cluster-spec';

function endpoint(uri: string): string {
  const url = new URL(uri);
  return `${url.username ? `${decodeURIComponent(url.username)}@` : ''}${url.host}${url.pathname}`;
}

export function migrationSummary(spec: ParsedSpec, label = 'pgmove'): string {
  const to = spec.target.uri ? new URL(spec.target.uri).host : `new RDS instance (${spec.aws.region})`;
  return `${label} ${spec.dryRun ? 'dry run' : 'migration'}: ${new URL(spec.source.uri).host} → ${to}`;
}

export function migrationDetails(spec: ParsedSpec, id: string, specFile: string): string {
  const to = spec.target.uri ? endpoint(spec.target.uri) : `a new RDS instance (${spec.target.provision?.instanceClass ?? 'provisioned'}, ${spec.aws.region})`;
  const online = spec.method === 'logical' || spec.method === 'dms' || spec.method === 'auto';
  return [
    `**${endpoint(spec.source.uri)}** → **${to}**`,
    '',
    `- method: \`${spec.method}\`${spec.method === 'auto' ? ' (pre-flight chooses; the status says why)' : ''}, ${spec.jobs} job(s)${spec.dryRun ? ', dry run: nothing is written' : ''}`,
    `- spec: \`${specFile}\` (id \`${id}\`)`,
    `- follow: \`npx pgmove status ${id}\`; abort: \`npx pgmove abort ${id}\``,
    ...(online ? [`- cut over when it is syncing: \`npx pgmove cutover ${id}\` (or the \`requestCutover\` update)${spec.cutover.autoCutover !== false ? '; autoCutover is on' : ''}`] : []),
    `- after the switch the old source stays ${spec.cutover.sourceAfterSwitch === 'frozen' ? `fenced until \`npx pgmove unfreeze ${id}\`` : 'writable'}`,
  ].join('\n');
}

export function clusterDetails(cluster: ClusterSpec, specFile: string): string {
  const databases = cluster.databases === 'all' ? `all but ${cluster.exceptDatabases.join(', ') || 'templates and postgres'}` : cluster.databases.map((d) => (typeof d === 'string' ? d : d.name)).join(', ');
  return [
    `**${endpoint(cluster.source.uri)}** → **${endpoint(cluster.target.uri)}**`,
    '',
    `- databases: ${databases} (each its own child workflow \`${cluster.id}.<database>\`), ${cluster.concurrency} at a time`,
    `- spec: \`${specFile}\`${cluster.dryRun ? ', dry run: nothing is written' : ''}`,
    `- follow: \`npx pgmove status ${cluster.id}\`; abort: \`npx pgmove abort ${cluster.id}\``,
    `- cut over (${cluster.cutover.mode}): \`npx pgmove cutover ${cluster.cutover.mode === 'together' ? cluster.id : `${cluster.id}.<database>`}\``,
  ].join('\n');
}
