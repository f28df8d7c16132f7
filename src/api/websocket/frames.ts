/**
 * Where WebSocket frames begin and end in a byte stream, without reading their payloads (RFC 6455 §5.2).
 * The relay forwards bytes as they come; this tells it, for each chunk, whether the stream stands between two
 * frames (where a close frame of ours may be sent without corrupting one of the peers'), and how long the
 * message being received is (the size limit). Payloads are never copied, unmasked or decompressed.
 */
import { randomBytes } from 'node:crypto';

/** What scan() found. */
export type Scan =
  /** Every byte of the chunk may go on. */
  | { kind: 'ok' }
  /** The chunk's first `at` bytes may go on; then the stream stands between frames (`stopAtBoundary`). */
  | { kind: 'boundary'; at: number }
  /** A frame header at byte `at` starts a message longer than the limit: the bytes before it may go on. */
  | { kind: 'too_big'; at: number }
  /** Not a WebSocket stream (a reserved opcode, a control frame that is too long or fragmented, a 64-bit length with its top bit set). */
  | { kind: 'bad'; at: number };

const CONTINUATION = 0x0;
/** RFC 6455 §5.5: control frames carry at most 125 bytes and are never fragmented. */
const MAX_CONTROL_PAYLOAD = 125;

export class FrameTracker {
  /** The header of the frame being read, as far as it has arrived. */
  private readonly head = Buffer.alloc(14);
  private headLength = 0;
  /** Payload bytes of the current frame still to come (0 with headLength 0: between frames). */
  private payloadLeft = 0;
  /** Payload bytes of the data message being received so far (its frames, continuation frames included). */
  private messageBytes = 0;

  /** @param maxMessageBytes the longest data message allowed (Infinity: no limit) */
  constructor(private readonly maxMessageBytes = Infinity) {}

  /** True between two frames. */
  get atBoundary(): boolean {
    return this.headLength === 0 && this.payloadLeft === 0;
  }

  /**
   * Follows `chunk`. With `stopAtBoundary`, stops at the first point between frames (0 when the stream is
   * there already) and reports it; what follows that point is not followed.
   */
  scan(chunk: Buffer, stopAtBoundary = false): Scan {
    let i = 0;
    const n = chunk.length;
    while (i < n || (stopAtBoundary && this.atBoundary)) {
      if (stopAtBoundary && this.atBoundary) return { kind: 'boundary', at: i };
      if (this.payloadLeft > 0) {
        const take = Math.min(this.payloadLeft, n - i);
        this.payloadLeft -= take;
        i += take;
        continue;
      }
      // Reading a header: first the two fixed bytes, which say how long the rest of it is.
      const start = i - this.headLength; // where this header began (negative: in an earlier chunk)
      while (i < n && this.headLength < 2) this.head[this.headLength++] = chunk[i++]!;
      if (this.headLength < 2) break;
      const need = headerLength(this.head[1]!);
      while (i < n && this.headLength < need) this.head[this.headLength++] = chunk[i++]!;
      if (this.headLength < need) break;
      const result = this.frame();
      if (result !== undefined) return { kind: result, at: Math.max(0, start) };
    }
    return { kind: 'ok' };
  }

  /** A whole header has arrived: checks it and starts its payload. */
  private frame(): 'too_big' | 'bad' | undefined {
    const b0 = this.head[0]!;
    const b1 = this.head[1]!;
    const opcode = b0 & 0x0f;
    const fin = (b0 & 0x80) !== 0;
    let payload = b1 & 0x7f;
    if (payload === 126) payload = this.head.readUInt16BE(2);
    else if (payload === 127) {
      const high = this.head.readUInt32BE(2);
      if (high > 0x1fffff) return 'bad'; // beyond 2^53: the most significant bit must be 0 anyway (§5.2)
      payload = high * 2 ** 32 + this.head.readUInt32BE(6);
    }
    this.headLength = 0;
    if (opcode >= 0x8) {
      if (opcode > 0xa || !fin || payload > MAX_CONTROL_PAYLOAD) return 'bad';
    } else if (opcode === 0x1 || opcode === 0x2) {
      this.messageBytes = payload;
    } else if (opcode === CONTINUATION) {
      this.messageBytes += payload;
    } else {
      return 'bad';
    }
    if (opcode < 0x8 && this.messageBytes > this.maxMessageBytes) return 'too_big';
    this.payloadLeft = payload;
    return undefined;
  }
}

/** The length of a frame header from its second byte: 2, plus the extended length, plus the mask. */
function headerLength(b1: number): number {
  const len = b1 & 0x7f;
  return 2 + (len === 126 ? 2 : len === 127 ? 8 : 0) + (b1 & 0x80 ? 4 : 0);
}

/**
 * A close frame (RFC 6455 §5.5.1): the status code and a reason of at most 123 bytes. `masked` for frames a
 * client sends (to the upstream, §5.3), unmasked for a server's (to the browser).
 */
export function closeFrame(code: number, reason: string, masked: boolean): Buffer {
  const text = Buffer.from(reason, 'utf8').subarray(0, 123);
  const payload = Buffer.alloc(2 + text.length);
  payload.writeUInt16BE(code, 0);
  text.copy(payload, 2);
  if (!masked) return Buffer.concat([Buffer.from([0x88, payload.length]), payload]);
  const mask = randomBytes(4); // §5.3: from a strong source of entropy
  for (let i = 0; i < payload.length; i++) payload[i] = payload[i]! ^ mask[i % 4]!;
  return Buffer.concat([Buffer.from([0x88, 0x80 | payload.length]), mask, payload]);
}
