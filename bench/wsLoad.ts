/**
 * WebSocket load, run inside the load generator (load.ts), with `ws` as the client, as a browser would open
 * its sockets: the session cookie and the gateway's public origin in the handshake, no compression.
 *
 * - echo: a fixed number of sockets, each keeping a window of messages in flight (pipelined: every echo
 *   received sends the next message), for a fixed time. Each message's latency is the time from its send to
 *   its echo (a socket's echoes come back in order).
 * - openIdle / closeIdle: many sockets opened and left idle (no message, no ping), then closed cleanly.
 */
import WebSocket from 'ws';
import { Samples, type Percentiles } from './stats';

export interface SocketSpec {
  /** ws://host:port/path */
  url: string;
  /** Session cookies (Cookie header values): socket i uses cookies[i % cookies.length]; none: no cookie. */
  cookies: string[];
  /** The Origin header of the handshake. */
  origin: string;
}

export interface EchoSpec extends SocketSpec {
  sockets: number;
  /** Messages in flight per socket. */
  window: number;
  /** Size of each (text) message. */
  messageBytes: number;
  seconds: number;
}

export interface EchoResult {
  sockets: number;
  /** Echoes received within the measured time, and in the whole call (the drain after it included). */
  messages: number;
  messagesInCall: number;
  seconds: number;
  messagesPerSecond: number;
  latencyMs: Percentiles;
  /** Echoes that were not the message sent (length differs), and sockets that closed or failed during the run. */
  wrongEchoes: number;
  socketErrors: number;
}

export interface IdleSpec extends SocketSpec {
  count: number;
  /** Handshakes under way at once. */
  concurrency: number;
}

export interface IdleResult {
  opened: number;
  /** Refused upgrades by status (0: a connection error). */
  refused: Record<string, number>;
  seconds: number;
}

export interface IdleClosed {
  closed: number;
  seconds: number;
}

/** Opens one socket; rejects with the status of a refused upgrade. */
function open(spec: SocketSpec, i: number): Promise<WebSocket> {
  const cookie = spec.cookies.length ? spec.cookies[i % spec.cookies.length] : undefined;
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(spec.url, {
      origin: spec.origin,
      headers: cookie ? { cookie } : {},
      perMessageDeflate: false,
      handshakeTimeout: 10_000,
    });
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_req, res) => {
      res.resume();
      ws.terminate();
      reject(Object.assign(new Error(`upgrade refused: ${res.statusCode}`), { status: res.statusCode ?? 0 }));
    });
    ws.once('error', (err) => reject(Object.assign(err, { status: 0 })));
  });
}

/** Closes sockets with a close handshake; resolves when every one is closed (or cut after `ms`). */
async function closeAll(sockets: WebSocket[], ms = 5000): Promise<void> {
  await Promise.all(
    sockets.map(
      (ws) =>
        new Promise<void>((resolve) => {
          if (ws.readyState === WebSocket.CLOSED) return resolve();
          const timer = setTimeout(() => ws.terminate(), ms);
          ws.once('close', () => {
            clearTimeout(timer);
            resolve();
          });
          ws.close(1000);
        }),
    ),
  );
}

export async function echo(spec: EchoSpec): Promise<EchoResult> {
  const sockets = await Promise.all(Array.from({ length: spec.sockets }, (_, i) => open(spec, i)));
  const message = Buffer.alloc(spec.messageBytes, 'x');
  const samples = new Samples();
  let counting = true;
  let sending = true;
  let messages = 0;
  let messagesInCall = 0;
  let wrongEchoes = 0;
  let socketErrors = 0;
  let inFlight = 0;
  let drained: (() => void) | undefined;
  const start = performance.now();
  for (const ws of sockets) {
    // Send times of the messages in flight, oldest first (a ring of `window` slots).
    const sent = new Float64Array(spec.window);
    let head = 0;
    let tail = 0;
    const send = () => {
      sent[tail] = performance.now();
      tail = (tail + 1) % spec.window;
      inFlight++;
      ws.send(message, { binary: false });
    };
    ws.on('message', (data) => {
      const now = performance.now();
      inFlight--;
      messagesInCall++;
      if ((data as Buffer).length !== spec.messageBytes) wrongEchoes++;
      if (counting) {
        messages++;
        samples.push(now - sent[head]!);
      }
      head = (head + 1) % spec.window;
      if (sending) send();
      else if (inFlight === 0) drained?.();
    });
    ws.on('close', () => {
      if (sending) socketErrors++;
    });
    ws.on('error', () => undefined);
    for (let k = 0; k < spec.window; k++) send();
  }
  await new Promise((r) => setTimeout(r, spec.seconds * 1000));
  counting = false;
  sending = false;
  const seconds = (performance.now() - start) / 1000;
  // The messages still in flight come back before the sockets close (a clean end for both sides).
  if (inFlight > 0) await Promise.race([new Promise<void>((r) => (drained = r)), new Promise((r) => setTimeout(r, 2000))]);
  await closeAll(sockets);
  return {
    sockets: sockets.length,
    messages,
    messagesInCall,
    seconds,
    messagesPerSecond: messages / seconds,
    latencyMs: samples.percentiles(),
    wrongEchoes,
    socketErrors,
  };
}

/** The idle sockets opened by openIdle, until closeIdle. */
let idle: WebSocket[] = [];

export async function openIdle(spec: IdleSpec): Promise<IdleResult> {
  const start = performance.now();
  const refused: Record<string, number> = {};
  let next = 0;
  const worker = async () => {
    while (next < spec.count) {
      const i = next++;
      try {
        const ws = await open(spec, i);
        ws.on('error', () => undefined);
        idle.push(ws);
      } catch (err) {
        const status = String((err as { status?: number }).status ?? 0);
        refused[status] = (refused[status] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(spec.concurrency, spec.count) }, worker));
  return { opened: idle.length, refused, seconds: (performance.now() - start) / 1000 };
}

export async function closeIdle(): Promise<IdleClosed> {
  const start = performance.now();
  const sockets = idle;
  idle = [];
  await closeAll(sockets);
  return { closed: sockets.length, seconds: (performance.now() - start) / 1000 };
}
