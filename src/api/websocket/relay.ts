/**
 * One open WebSocket, after the upstream's 101: the bytes of each direction are written on as they arrive
 * (back-pressure kept, nothing buffered, payloads never read), while a FrameTracker per direction knows where
 * the frames end. That is what http-proxy-middleware's own relay (a pipe of raw bytes) cannot know, and what
 * ending a socket cleanly needs: the gateway's close frame goes to the browser only between two of the
 * upstream's frames, and one to the upstream only between two of the browser's.
 *
 * The browser's messages are bounded (a frame header announcing more than the limit stops that direction
 * before the header is written on), and each chunk it sends is activity for its session.
 */
import type { Duplex } from 'node:stream';
import type { SocketCloseReason } from '../../health/metrics';
import { closeFrame, FrameTracker } from './frames';

/** RFC 6455 §7.4.1 status codes the gateway sends. */
export const CLOSE = {
  goingAway: 1001,
  protocolError: 1002,
  policyViolation: 1008,
  messageTooBig: 1009,
  internalError: 1011,
} as const;

/** How long a clean close may take (the frame in flight, the peers' answers) before both connections are cut. */
const CLOSE_DEADLINE_MS = 1000;

export interface RelayEvents {
  /** The browser sent bytes (called per chunk, so keep it cheap). */
  onBrowserData: () => void;
  /** Both connections are closed; `reason` says who or what started it. Called once. */
  onClosed(reason: SocketCloseReason): void;
}

/** One direction: bytes from `from` written to `to`, the frames followed. */
class Direction {
  /** Nothing more is written on. */
  private stopped = false;
  /** Called at the next point between frames (close()). */
  private atBoundary: (() => void) | undefined;

  constructor(
    private readonly from: Duplex,
    private readonly to: Duplex,
    private readonly tracker: FrameTracker,
    private readonly onViolation: (kind: 'too_big' | 'bad') => void,
  ) {
    from.on('data', this.data);
    from.resume(); // the proxy's pipe, just taken apart, left it paused
  }

  private readonly data = (chunk: Buffer): void => {
    if (this.stopped) return;
    const found = this.tracker.scan(chunk, this.atBoundary !== undefined);
    if (found.kind === 'ok') {
      if (!this.to.write(chunk)) {
        this.from.pause();
        this.to.once('drain', () => this.from.resume());
      }
      return;
    }
    this.stopped = true;
    if (found.at > 0) this.to.write(chunk.subarray(0, found.at));
    if (found.kind === 'boundary') this.atBoundary!();
    else this.onViolation(found.kind);
  };

  /** Stops writing on, at once when between frames, else once the frame under way has passed; then `then`. */
  finish(then: () => void): void {
    if (this.stopped) return then();
    if (this.tracker.atBoundary) {
      this.stopped = true;
      return then();
    }
    this.atBoundary = then;
    this.from.resume(); // the rest of the frame may be waiting behind back-pressure
  }

  /** Stops writing on, wherever the stream stands. */
  stop(): void {
    this.stopped = true;
  }
}

export class Relay {
  private readonly down: Direction;
  private readonly up: Direction;
  private closing: SocketCloseReason | undefined;
  private ended: SocketCloseReason | undefined;
  private closedCount = 0;
  private deadline: NodeJS.Timeout | undefined;

  /**
   * @param browser the browser's connection, after the 101 was written to it
   * @param upstream the upstream's connection, after its 101
   */
  constructor(
    private readonly browser: Duplex,
    private readonly upstream: Duplex,
    maxMessageBytes: number,
    private readonly events: RelayEvents,
  ) {
    this.down = new Direction(upstream, browser, new FrameTracker(), () => this.cut('protocol'));
    this.up = new Direction(browser, upstream, new FrameTracker(maxMessageBytes), (kind) =>
      // The upstream's stream stands between frames (the header was not written on): it gets a clean close.
      this.close(
        kind === 'too_big' ? CLOSE.messageTooBig : CLOSE.protocolError,
        kind === 'too_big' ? 'message_too_big' : 'protocol_error',
        kind === 'too_big' ? 'too_big' : 'protocol',
      ),
    );
    browser.on('data', () => events.onBrowserData());
    // A side that ends (its FIN) ends the other side too; a side that is gone takes the other with it.
    const track = (side: Duplex, other: Duplex, who: SocketCloseReason) => {
      side.on('error', () => side.destroy());
      side.on('end', () => {
        this.ended ??= who;
        if (!this.closing) other.end();
      });
      side.on('close', () => {
        this.ended ??= who;
        other.destroy();
        if (++this.closedCount === 2) this.done();
      });
    };
    track(browser, upstream, 'browser');
    track(upstream, browser, 'upstream');
  }

  /**
   * Ends the socket for a reason of the gateway's: the browser gets a close frame with `code` and `reason`
   * once the upstream's frame under way has passed, the upstream a close frame (going away) once the browser's
   * has; whatever is not done within a second is cut.
   */
  close(code: number, reason: string, why: SocketCloseReason): void {
    if (this.closing || this.closedCount > 0) return;
    this.closing = why;
    this.deadline = setTimeout(() => this.destroy(), CLOSE_DEADLINE_MS).unref();
    this.down.finish(() => this.browser.end(closeFrame(code, reason, false)));
    this.up.finish(() => this.upstream.end(closeFrame(CLOSE.goingAway, '', true)));
  }

  /** Cuts both connections at once (no close frame can be sent cleanly). */
  cut(why: SocketCloseReason): void {
    this.closing ??= why;
    this.destroy();
  }

  private destroy(): void {
    this.down.stop();
    this.up.stop();
    this.browser.destroy();
    this.upstream.destroy();
  }

  private done(): void {
    clearTimeout(this.deadline);
    this.events.onClosed(this.closing ?? this.ended ?? 'browser');
  }
}
