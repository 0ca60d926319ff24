/**
 * Picks the PostgreSQL client tools (pg_dump, pg_restore) deliberately: the source's own major when
 * available, else the newest major above it. A newer pg_dump is not automatically safe (STACK.md:
 * pg_dump 18.6 emits a column option that Debian's 15.20 stores and an 18 server rejects).
 */
import { existsSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { run } from '../exec';

export interface ClientTools {
  binDir: string;
  major: number;
  version: string;
}

const PROJECT_ROOT = resolve(__dirname, '..', '..');

/** Directories that may hold client tools, most specific first. */
export function candidateBinDirs(): string[] {
  const dirs: string[] = [];
  if (process.env.PGMOVE_PG_BINDIR) dirs.push(process.env.PGMOVE_PG_BINDIR);
  const debian = '/usr/lib/postgresql';
  if (existsSync(debian)) {
    for (const major of readdirSync(debian)) dirs.push(join(debian, major, 'bin'));
  }
  for (const entry of existsSync(join(PROJECT_ROOT, '.tools')) ? readdirSync(join(PROJECT_ROOT, '.tools')) : []) {
    if (/^pg\d+$/.test(entry)) dirs.push(join(PROJECT_ROOT, '.tools', entry, 'bin'));
  }
  return dirs.filter((dir) => existsSync(join(dir, 'pg_dump')) && existsSync(join(dir, 'pg_restore')));
}

export async function describeTools(binDir: string): Promise<ClientTools> {
  const { stdout } = await run(join(binDir, 'pg_dump'), ['--version']);
  const match = /(\d+)(?:\.(\d+))?/.exec(stdout);
  if (!match) throw new Error(`cannot read the version of ${join(binDir, 'pg_dump')}: ${stdout}`);
  return { binDir, major: Number(match[1]), version: stdout.trim().replace(/^pg_dump \(PostgreSQL\) /, '') };
}

/**
 * The tools to use for a source of the given major: the spec's choice if set (checked by pre-flight),
 * else the same major, else the lowest major above it.
 */
export async function chooseClientTools(sourceMajor: number, requestedBinDir?: string): Promise<ClientTools> {
  if (requestedBinDir) return describeTools(requestedBinDir);
  const found = await Promise.all(candidateBinDirs().map((dir) => describeTools(dir).catch(() => undefined)));
  const usable = found.filter((t): t is ClientTools => t !== undefined && t.major >= sourceMajor);
  usable.sort((a, b) => a.major - b.major);
  const best = usable[0];
  if (!best) {
    const seen = found.filter((t) => t).map((t) => `${t?.binDir} (${t?.major})`).join(', ') || 'none';
    throw new Error(
      `no pg_dump of major ${sourceMajor} or newer found (seen: ${seen}); install the PostgreSQL ${sourceMajor} client tools or set tools.pgBinDir`,
    );
  }
  return best;
}
