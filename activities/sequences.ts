/**
 * Phase 9 (sequence part): every sequence in scope — owned, identity and standalone — set on the
 * target to the source's value after the data, with is_called kept, so the next nextval() matches.
 */
import type { MigrationSpec } from '../src/spec';
import { connectionInfo, withClient } from '../src/pg/connect';
import { listSequences } from '../src/pg/catalog';
import { qualified } from '../src/pg/sql';
import { activityLogger } from '../src/log';

export async function syncSequences(spec: MigrationSpec): Promise<{ sequences: number }> {
  const sourceInfo = await connectionInfo(spec.source, 'source');
  const targetInfo = await connectionInfo(spec.target, 'target');
  const sequences = await withClient(sourceInfo, 'source', (client) => listSequences(client, spec));
  await withClient(targetInfo, 'target', async (client) => {
    await client.query('BEGIN');
    for (const sequence of sequences) {
      await client.query('SELECT setval($1::regclass, $2::bigint, $3)', [qualified(sequence), sequence.lastValue, sequence.isCalled]);
    }
    await client.query('COMMIT');
  });
  activityLogger('sequences').info({ sequences: sequences.length }, 'sequences set');
  return { sequences: sequences.length };
}
