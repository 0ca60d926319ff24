/**
 * A COPY relayed between two servers with the protocol's bytes as they come. The source answers
 * `COPY … TO STDOUT` with CopyData messages ('d', length, one row), and `COPY … FROM STDIN` on the target
 * takes exactly such messages: runs of them go from one socket to the other as slices of the chunk
 * that brought them. The worker reads five header bytes per row and copies only the rows split between
 * two chunks (each relayed once whole, so the target never waits inside a message) — a relay that
 * unwraps each row and wraps it again spent about half the worker's share of a copy.
 *
 * `RawCopyOut` takes the source connection's socket over for the COPY's output, as pg-copy-streams'
 * copy-to does, and gives it back to `pg` at CopyDone or at an error, which `pg` then parses itself.
 */
import { Readable, type Writable } from 'node:stream';
import type { Connection, Submittable } from 'pg';
import { from as copyFrom, type CopyStreamQuery as CopyInStream } from 'pg-copy-streams';

const COPY_DATA = 0x64; // 'd'
const COPY_DONE = 0x63; // 'c'
const ERROR_RESPONSE = 0x45; // 'E'
const HEADER = 5;

/** What a pg connection offers a submittable query (the parts the relay uses). */
interface PgConnection {
  stream: NodeJS.ReadableStream;
  query(text: string): void;
}

export interface RelayCounters {
  /** Row bytes relayed (without the message headers). */
  bytes: number;
}

export class RawCopyOut extends Readable implements Submittable {
  private connection: PgConnection | undefined;
  private pgDataHandler: ((chunk: Buffer) => void) | undefined;
  private readonly onReadable = () => this.forward();
  private wanted = false;
  private forwarding = false;
  /** A message header split between two socket chunks. */
  private partialHeader: Buffer | undefined;
  /** Bytes of the current message still to come, and whether they are relayed (a 'd' message) or skipped. */
  private bodyLeft = 0;
  private relayBody = false;
  /** The parts of a row split between socket chunks (relayed once whole). */
  private readonly pendingRow: Buffer[] = [];

  constructor(
    private readonly text: string,
    private readonly counters: RelayCounters,
  ) {
    super({ highWaterMark: 1 << 20 });
  }

  /** Called by pg when this query's turn comes. */
  submit(pgConnection: Connection): void {
    const connection = pgConnection as unknown as PgConnection;
    this.connection = connection;
    const stream = connection.stream;
    const handlers = stream.listeners('data') as ((chunk: Buffer) => void)[];
    if (handlers.length !== 1) throw new Error('pgmove copy relay: the connection has an unexpected reader');
    this.pgDataHandler = handlers[0];
    stream.removeListener('data', this.pgDataHandler!);
    stream.pause();
    stream.on('readable', this.onReadable);
    connection.query(this.text);
  }

  override _read(): void {
    this.wanted = true;
    this.forward();
  }

  private forward(): void {
    if (this.forwarding || !this.wanted || !this.connection) return;
    this.forwarding = true;
    let chunk: Buffer | null;
    while (this.wanted && this.connection && (chunk = this.connection.stream.read() as Buffer | null) !== null) this.wanted = this.relay(chunk);
    this.forwarding = false;
  }

  /** Relays the CopyData runs of one socket chunk; returns whether more is wanted downstream. */
  private relay(incoming: Buffer): boolean {
    let chunk = incoming;
    if (this.partialHeader) {
      chunk = Buffer.concat([this.partialHeader, incoming]);
      this.partialHeader = undefined;
    }
    const length = chunk.length;
    let wanted = true;
    let pos = 0;
    let runStart = -1;
    let rowBytes = 0;
    const emit = (end: number) => {
      if (runStart >= 0 && end > runStart) wanted = this.push(chunk.subarray(runStart, end)) && wanted;
      runStart = -1;
    };
    if (this.bodyLeft > 0) {
      // The rest of a message begun in an earlier chunk.
      const n = Math.min(this.bodyLeft, length);
      this.bodyLeft -= n;
      pos = n;
      if (this.relayBody) {
        rowBytes += n;
        this.pendingRow.push(chunk.subarray(0, n));
        if (this.bodyLeft === 0) wanted = this.push(Buffer.concat(this.pendingRow.splice(0))) && wanted;
      }
    }
    while (pos < length) {
      if (length - pos < HEADER) {
        emit(pos);
        this.partialHeader = Buffer.from(chunk.subarray(pos));
        break;
      }
      const code = chunk[pos]!;
      // The message length, big-endian (inline: this runs once per row).
      const end = pos + 1 + (chunk[pos + 1]! * 0x1000000 + ((chunk[pos + 2]! << 16) | (chunk[pos + 3]! << 8) | chunk[pos + 4]!));
      if (code === COPY_DATA) {
        if (end > length) {
          // A row that goes on in the next chunk is held until it is whole: the target only ever gets
          // whole messages, so a CopyFail after them (an abort, the source lost) is read as one.
          rowBytes += length - pos - HEADER;
          emit(pos);
          this.pendingRow.push(chunk.subarray(pos));
          this.bodyLeft = end - length;
          this.relayBody = true;
          pos = length;
          break;
        }
        rowBytes += end - pos - HEADER;
        if (runStart < 0) runStart = pos;
        pos = end;
        continue;
      }
      emit(pos);
      if (code === ERROR_RESPONSE) {
        // pg parses the error (and the ReadyForQuery after it) and calls handleError.
        this.counters.bytes += rowBytes;
        this.giveBack(chunk.subarray(pos));
        return wanted;
      }
      if (code === COPY_DONE) {
        this.counters.bytes += rowBytes;
        this.giveBack(chunk.subarray(end));
        this.push(null);
        return wanted;
      }
      // CopyOutResponse, and notices or parameter changes in between: not rows, not relayed.
      if (end > length) {
        this.bodyLeft = end - length;
        this.relayBody = false;
        pos = length;
        break;
      }
      pos = end;
    }
    emit(pos);
    this.counters.bytes += rowBytes;
    return wanted;
  }

  /** Hands the socket, and what is left of this chunk, back to pg. */
  private giveBack(rest: Buffer): void {
    const connection = this.connection!;
    const stream = connection.stream;
    const handler = this.pgDataHandler!;
    this.connection = undefined;
    stream.removeListener('readable', this.onReadable);
    stream.on('data', handler);
    if (rest.length > 0) handler(rest);
    process.nextTick(() => stream.resume());
  }

  handleError(error: Error): void {
    this.destroy(error);
  }

  /** The rows are counted by the target's COPY (its CommandComplete), not here. */
  handleCommandComplete(): void {}

  handleReadyForQuery(): void {}
}

/**
 * `COPY … FROM STDIN` that writes the chunks it is given as they are: they are whole CopyData messages
 * from a RawCopyOut (pg-copy-streams would wrap each chunk in a message of its own).
 */
export function rawCopyIn(text: string): CopyInStream {
  const stream = copyFrom(text, { highWaterMark: 1 << 20 });
  const raw = stream as unknown as { flushChunk: (chunk: Buffer) => boolean; connection: { stream: Writable } };
  raw.flushChunk = (chunk: Buffer) => {
    // The chunks written in one tick (a row completed by a socket chunk, then the run after it) leave in
    // one writev: half the write calls of a write per chunk.
    const socket = raw.connection.stream;
    if (!socket.writableCorked) {
      socket.cork();
      process.nextTick(() => socket.uncork());
    }
    return socket.write(chunk);
  };
  return stream;
}
