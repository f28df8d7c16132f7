/**
 * A WebSocket route's upgrades → its upstream, through http-proxy-middleware's `upgrade()` (engine: httpxy),
 * called by the lane once the request passed every check. Never `ws: true`: that makes the proxy listen for
 * upgrades on the server by itself, before and without any of the lane's checks (cross-site WebSocket
 * hijacking).
 *
 * Who does what:
 * - The proxy connects to the upstream and sends the handshake. Its request is rewritten when it is made
 *   (`proxyReqWs`) as an HTTP request's is: the base path plus the checked path, the browser's credentials
 *   and identity fields out, exactly one `Authorization: Bearer`, and the handshake's own fields
 *   (`Upgrade`, `Connection: Upgrade`, `Sec-WebSocket-*`) in.
 * - The upstream's answer is filtered before the proxy writes it to the browser: a 101 keeps only the
 *   handshake's fields (so no `Set-Cookie` reaches the browser); any other answer loses its hop-by-hop
 *   fields and `Set-Cookie`, as on the HTTP routes.
 * - Once both sides have switched, the proxy's byte pipe is replaced by the Relay, which knows where frames
 *   end (relay.ts): the gateway can then close a socket cleanly when its session ends.
 * - Timeouts are ours, as for HTTP: to the connection, then to the upstream's answer (504 upstream_timeout).
 */
import type { ClientRequest, IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { createProxyMiddleware, type Plugin } from 'http-proxy-middleware';
import type { Logger } from '../../log/logger';
import type { Metrics, UpstreamErrorKind } from '../../health/metrics';
import { pathOf, type HttpResponse } from '../../http/exchange';
import { clientAddress } from '../../http/clientAddress';
import { answerError, sendError } from '../../http/errors';
import { downstreamHeaders, droppedNames, upstreamHeaders } from '../headers';
import type { ForwardRoute, ForwardShared } from '../forward';
import { Relay } from './relay';
import type { SocketTicket } from './liveSockets';
import { authorization, dpopProof, type UpstreamToken } from '../../tokens/dpop';

/** What the lane decided for this upgrade. */
export interface SocketExchange {
  /** Path and query to append to the upstream's base path (checked by the path guard). */
  upstreamPath: string;
  /** The access token to send (with a DPoP proof when it is bound). */
  token?: UpstreamToken;
  /** The socket's place among its session's sockets. */
  ticket: SocketTicket;
  /** For the log line when the socket closes. */
  session?: string;
}

export interface SocketForwarder {
  /**
   * Sends the upgrade upstream. `res` is the browser's answer while there is no socket yet (bound to its
   * connection): a failure before the upstream's 101 is answered there.
   */
  open(req: IncomingMessage, res: HttpResponse, socket: Duplex, head: Buffer, exchange: SocketExchange): void;
}

/** RFC 6455 §4.2.2: the fields of a server's handshake answer. Nothing else of the upstream's 101 passes. */
const HANDSHAKE_ANSWER = ['upgrade', 'connection', 'sec-websocket-accept', 'sec-websocket-protocol', 'sec-websocket-extensions'];

interface Opening {
  readonly req: IncomingMessage;
  readonly res: HttpResponse;
  readonly socket: Socket;
  readonly exchange: SocketExchange;
  readonly headers: readonly string[];
  readonly path: string;
  /** The DPoP proof of the handshake, when its token is bound. */
  proof: string | undefined;
  phase: 'connect' | 'wait' | 'answered' | 'open';
  timer: NodeJS.Timeout | undefined;
  upstream: ClientRequest | undefined;
  timedOut: UpstreamErrorKind | undefined;
  failed: boolean;
  readonly started: number;
}

const OPENING = Symbol('gatehouse.opening');
type Carrier = Duplex & { [OPENING]?: Opening };
const openingOf = (socket: unknown): Opening | undefined => (socket as Carrier | undefined)?.[OPENING];

export function createSocketForwarder(
  route: ForwardRoute & { maxMessageBytes: number },
  shared: ForwardShared,
  log: Logger,
  metrics: Metrics,
): SocketForwarder {
  const upstream = route.upstream;
  const secure = upstream.protocol === 'https:';
  const base = upstream.pathname.replace(/\/+$/, '');
  const publicUrl = new URL(shared.publicOrigin);
  const proto = publicUrl.protocol === 'https:' ? 'wss' : 'ws';
  const drop = droppedNames(shared.dropHeaders);
  const connectMs = shared.upstreamConnectTimeoutSeconds * 1000;
  const answerMs = route.timeoutSeconds * 1000;

  /** The upgrade failed before a socket opened: answered on the browser's connection (no half-open socket). */
  const fail = (o: Opening, kind: UpstreamErrorKind, err?: NodeJS.ErrnoException): void => {
    clearTimeout(o.timer);
    o.upstream?.destroy();
    if (o.failed || o.phase === 'open') return;
    o.failed = true;
    o.exchange.ticket.release();
    if (o.socket.destroyed) return;
    metrics.upstreamError(kind);
    log.warn({ kind, err: err && { message: err.message, code: err.code }, path: pathOf(o.req.url) }, 'upstream WebSocket upgrade failed');
    const timeout = kind === 'connect_timeout' || kind === 'response_timeout';
    if (o.res.headersSent) return void o.socket.destroy();
    sendError(o.res, timeout ? 504 : 502, timeout ? 'upstream_timeout' : 'bad_gateway'); // names no host, port or error
  };

  const waitForAnswer = (o: Opening): void => {
    if (o.phase !== 'connect') return;
    clearTimeout(o.timer);
    o.phase = 'wait';
    o.timer = setTimeout(() => timeout(o, 'response_timeout'), answerMs);
  };
  const timeout = (o: Opening, kind: UpstreamErrorKind): void => {
    o.timedOut = kind;
    if (o.upstream) o.upstream.destroy(new Error('no answer in time'));
    else fail(o, kind);
  };

  const plugin: Plugin = (server) => {
    server.on('proxyReqWs', (up, _req, socket) => {
      const o = openingOf(socket);
      if (!o || o.failed) return void up.destroy();
      o.upstream = up;
      try {
        up.path = o.path;
        for (const name of up.getHeaderNames()) up.removeHeader(name);
        const h = o.headers;
        for (let i = 0; i < h.length; i += 2) up.appendHeader(h[i]!, h[i + 1]!);
        up.setHeader('connection', 'Upgrade');
        up.setHeader('upgrade', 'websocket');
        if (o.exchange.token !== undefined) up.setHeader('authorization', authorization(o.exchange.token));
        if (o.proof !== undefined) up.setHeader('dpop', o.proof);
      } catch (err) {
        clearTimeout(o.timer);
        o.failed = true;
        up.destroy();
        o.exchange.ticket.release();
        return answerError(log, err, o.req, o.res); // a token node:http will not send: nothing goes upstream
      }
      // Listeners put first, so they run before the proxy writes the answer to the browser.
      up.prependListener('response', (answer: IncomingMessage) => {
        // The upstream refused the upgrade: its answer passes with the HTTP routes' header rules.
        clearTimeout(o.timer);
        o.phase = 'answered';
        o.exchange.ticket.release();
        metrics.upgradeRefused('upstream');
        replaceHeaders(answer.headers, downstreamHeaders(answer.headers, undefined) as IncomingHttpHeaders);
      });
      up.prependListener('upgrade', (answer: IncomingMessage, upstreamSocket: Duplex) => {
        clearTimeout(o.timer);
        o.phase = 'open';
        const kept: IncomingHttpHeaders = {};
        for (const name of HANDSHAKE_ANSWER) if (answer.headers[name] !== undefined) kept[name] = answer.headers[name];
        replaceHeaders(answer.headers, kept);
        (upstreamSocket as Carrier)[OPENING] = o;
      });
      up.on('socket', (s: Socket) => {
        if (s.connecting) s.once(secure ? 'secureConnect' : 'connect', () => waitForAnswer(o));
        else waitForAnswer(o);
      });
    });

    // Both sides have switched; the proxy has just piped them together.
    server.on('open', (upstreamSocket: Duplex) => {
      const o = openingOf(upstreamSocket);
      if (!o) return void upstreamSocket.destroy();
      o.socket.unpipe(upstreamSocket);
      upstreamSocket.unpipe(o.socket);
      o.res.detachSocket(o.socket);
      metrics.socketOpened();
      const relay = new Relay(o.socket, upstreamSocket, route.maxMessageBytes, {
        onBrowserData: o.exchange.ticket.activity,
        onClosed: (reason) => {
          o.exchange.ticket.release();
          metrics.socketClosed(reason);
          log.info(
            {
              event: 'websocket',
              path: pathOf(o.req.url),
              reason,
              seconds: Math.round((performance.now() - o.started) / 100) / 10,
              ...(o.exchange.session && { session: o.exchange.session }),
            },
            'websocket closed',
          );
        },
      });
      o.exchange.ticket.open(relay);
    });

    server.on('error', (err: NodeJS.ErrnoException, _req: unknown, socket: unknown) => {
      const o = openingOf(socket);
      if (!o) return void log.error({ err }, 'WebSocket proxy error outside any upgrade');
      fail(o, o.timedOut ?? (err.code?.startsWith('HPE_') ? 'malformed' : o.phase === 'connect' ? 'unreachable' : 'reset'), err);
    });
  };

  const proxy = createProxyMiddleware({
    target: upstream,
    changeOrigin: true,
    ejectPlugins: true,
    plugins: [plugin],
  });

  return {
    open(req, res, socket, head, exchange) {
      const o: Opening = {
        req,
        res,
        socket: socket as Socket,
        exchange,
        headers: upstreamHeaders(
          req.headers,
          { method: 'GET', clientIp: clientAddress(req, shared.trustProxy), proto, host: publicUrl.host, upstreamHost: upstream.host },
          drop,
        ),
        path: base + exchange.upstreamPath,
        proof: undefined,
        phase: 'connect',
        timer: undefined,
        upstream: undefined,
        timedOut: undefined,
        failed: false,
        started: performance.now(),
      };
      (socket as Carrier)[OPENING] = o;
      o.timer = setTimeout(() => timeout(o, 'connect_timeout'), connectMs);
      // The browser went away during the handshake: the upstream's is stopped.
      socket.once('close', () => {
        if (o.phase !== 'open') fail(o, 'reset');
      });
      const key = exchange.token?.dpop;
      if (!key) return proxy.upgrade(req, socket as Socket, head);
      // RFC 9449 §4.2: the handshake is an HTTP GET of the upstream's http(s) URI, proven like any request.
      dpopProof(key, {
        method: 'GET',
        url: `${upstream.protocol}//${upstream.host}${o.path}`,
        accessToken: exchange.token!.accessToken,
      }).then(
        (proof) => {
          if (o.failed) return;
          o.proof = proof;
          proxy.upgrade(req, socket as Socket, head);
        },
        (err: unknown) => {
          clearTimeout(o.timer);
          o.failed = true;
          exchange.ticket.release();
          answerError(log, err, req, res);
        },
      );
    },
  };
}

/** Replaces a parsed header object's fields in place (the proxy writes the object it holds). */
function replaceHeaders(target: IncomingHttpHeaders, kept: IncomingHttpHeaders): void {
  for (const name of Object.keys(target)) delete target[name];
  Object.assign(target, kept);
}
