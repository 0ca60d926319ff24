/**
 * The COPY relay's framing (src/pg/copy-relay.ts) against a stand-in socket: whatever the socket's
 * chunk boundaries (inside a header, inside a row, between messages), exactly the CopyData messages are
 * relayed, whole (each push ends on a message boundary) and in order; what is not a row (CopyOutResponse,
 * a notice) is not; and what follows CopyDone goes back to pg's own reader byte for byte.
 */
import { PassThrough } from 'node:stream';
import type { Connection } from 'pg';
import { RawCopyOut } from '../../src/pg/copy-relay';

const message = (code: string, body: Buffer) => {
  const header = Buffer.alloc(5);
  header.write(code, 0, 'latin1');
  header.writeUInt32BE(body.length + 4, 1);
  return Buffer.concat([header, body]);
};

const rows = Array.from({ length: 40 }, (_, i) => message('d', Buffer.from(`${i}\t${'v'.repeat((i * 7) % 23)}\n`)));
const relayed = Buffer.concat(rows);
const afterCopy = Buffer.concat([message('C', Buffer.from('COPY 40\0')), message('Z', Buffer.from('I'))]);
const wire = Buffer.concat([
  message('H', Buffer.from([0, 0, 1, 0, 0])),
  ...rows.slice(0, 20),
  message('N', Buffer.from('SNOTICE\0Mdisk nearly full\0\0')),
  ...rows.slice(20),
  message('c', Buffer.alloc(0)),
  afterCopy,
]);

/** Feeds the wire in chunks of `size` and returns what was relayed and what pg's reader got back. */
async function relayInChunks(size: number): Promise<{ out: Buffer; givenBack: Buffer; bytes: number; pushes: Buffer[] }> {
  const stream = new PassThrough();
  const givenBack: Buffer[] = [];
  stream.on('data', (chunk: Buffer) => givenBack.push(chunk));
  const connection = { stream, query: () => undefined } as unknown as Connection;
  const counters = { bytes: 0 };
  const copy = new RawCopyOut('COPY t TO STDOUT', counters);
  copy.submit(connection);
  const collected: Buffer[] = [];
  const done = (async () => {
    for await (const chunk of copy) collected.push(chunk as Buffer);
  })();
  for (let offset = 0; offset < wire.length; offset += size) {
    stream.write(wire.subarray(offset, offset + size));
    await new Promise((resolve) => setImmediate(resolve));
  }
  await done;
  await new Promise((resolve) => setImmediate(resolve));
  return { out: Buffer.concat(collected), givenBack: Buffer.concat(givenBack), bytes: counters.bytes, pushes: collected };
}

test.each([1, 2, 3, 4, 5, 6, 7, 11, 13, 64, 1000, wire.length])('socket chunks of %i bytes: rows relayed whole, the rest given back', async (size) => {
  const { out, givenBack, bytes, pushes } = await relayInChunks(size);
  expect(out.equals(relayed)).toBe(true);
  // Every push is whole messages: a CopyFail written after any of them is read as a message of its own.
  for (const push of pushes) {
    let at = 0;
    while (at < push.length) at += 1 + push.readUInt32BE(at + 1);
    expect(at).toBe(push.length);
  }
  expect(givenBack.equals(afterCopy)).toBe(true);
  expect(bytes).toBe(relayed.length - 5 * rows.length);
});
