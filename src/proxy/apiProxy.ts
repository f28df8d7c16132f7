/**
 * /api → upstream, on node:http directly: the request streams to the upstream over a keep-alive connection
 * and the answer streams back (nothing is buffered, so uploads and SSE stream both ways).
 *
 * Why not http-proxy-middleware (DESIGN.md's stack): under load its generic machinery (option merging, a
 * pipeline of passes, event plumbing) cost more CPU than everything else on the hot path together, and
 * Gatehouse uses none of its options (issue 6: the hot path near the cost of a bare Node proxy). What it did
 * that matters here is kept below, each with its reason.
 *
 * The upstream is not trusted to behave: whatever it answers (or does not), every exchange ends with the
 * upstream's answer, a 502/504 of ours, or a cut connection, and its upstream connection is freed.
 */
import http from 'node:http';
import https from 'node:https';
import { pathOf, type Step } from '../http/exchange';
import { clientAddress } from '../http/clientAddress';
import type { Config } from '../config/schema';
import type { Logger } from '../log/logger';
import type { Metrics, UpstreamErrorKind } from '../health/metrics';
import { RETRY_AFTER_SECONDS, sendError } from '../http/errors';
import { upstreamPath } from './pathGuard';
import { downstreamHeaders, droppedNames, framingNamedInConnection, upstreamHeaders } from './headers';

export interface ApiProxy {
  /** R49: refuses paths that would leave the upstream base, TRACE/CONNECT, and smuggling-shaped headers. */
  guard: Step;
  /** Injects the bearer (from res.locals.accessToken) and forwards. */
  forward: Step;
  close(): void;
}

export type ProxySettings = Pick<
  Config,
  | 'upstream'
  | 'publicOrigin'
  | 'trustProxy'
  | 'upstreamTimeoutSeconds'
  | 'upstreamConnectTimeoutSeconds'
  | 'upstreamSocketsPerSession'
  | 'dropHeaders'
>;

/** RFC 9112 §4: reason-phrase = 1*( HTAB / SP / VCHAR / obs-text ); anything else is not sent on. */
const REASON_PHRASE = /^[\t\x20-\x7e\x80-\xff]*$/;

export function createApiProxy(cfg: ProxySettings, log: Logger, metrics: Metrics): ApiProxy {
  const upstream = cfg.upstream;
  const secure = upstream.protocol === 'https:';
  const client = secure ? https : http;
  const agent = new client.Agent({ keepAlive: true, maxSockets: 512 });
  const base = upstream.pathname.replace(/\/+$/, '');
  const target = { protocol: upstream.protocol, hostname: upstream.hostname, port: Number(upstream.port) || (secure ? 443 : 80), agent };
  const publicUrl = new URL(cfg.publicOrigin);
  const proto = publicUrl.protocol.slice(0, -1);
  const drop = droppedNames(cfg.dropHeaders);
  const connectMs = cfg.upstreamConnectTimeoutSeconds * 1000;
  const answerMs = cfg.upstreamTimeoutSeconds * 1000;
  // Upstream requests in flight per session: one user's requests can hold at most this share of the pool.
  const inFlight = new Map<string, number>();
  const retry = { 'Retry-After': String(RETRY_AFTER_SECONDS) };

  const guard: Step = (req, res, next) => {
    if (req.method === 'TRACE' || req.method === 'CONNECT') {
      res.setHeader('Allow', 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS');
      return sendError(res, 405, 'method_not_allowed');
    }
    const path = upstreamPath(req.url ?? '');
    if (path === undefined || framingNamedInConnection(req.headers)) return sendError(res, 400, 'bad_request');
    res.locals.upstreamPath = path;
    next();
  };

  const forward: Step = (req, res) => {
    const session = req.sessionID;
    const open = inFlight.get(session) ?? 0;
    if (open >= cfg.upstreamSocketsPerSession) {
      metrics.upstreamBusy();
      return sendError(res, 503, 'upstream_busy', retry);
    }
    inFlight.set(session, open + 1);
    // Given back when the browser's exchange ends, however it ends (registered first: nothing below may leak it).
    res.on('close', () => {
      const left = inFlight.get(session)! - 1;
      if (left === 0) inFlight.delete(session);
      else inFlight.set(session, left);
    });

    const headers = upstreamHeaders(
      req.headers,
      {
        method: req.method,
        accessToken: res.locals.accessToken as string,
        clientIp: clientAddress(req, cfg.trustProxy),
        proto,
        host: publicUrl.host,
        upstreamHost: upstream.host,
      },
      drop,
    );
    const up = client.request({ ...target, method: req.method, path: base + (res.locals.upstreamPath as string), headers });

    // connect: until a connected socket is ours (queued in the pool counts); wait: until the response head.
    let phase: 'connect' | 'wait' | 'answer' = 'connect';
    let timer = setTimeout(() => fail('connect_timeout'), connectMs);
    let gone = false; // the browser went away: nothing to answer, nothing worth a warning
    let failed = false; // logged, counted and answered once

    const fail = (kind: UpstreamErrorKind, err?: NodeJS.ErrnoException) => {
      phase = 'answer';
      clearTimeout(timer);
      up.destroy();
      if (gone || failed) return;
      failed = true;
      metrics.upstreamError(kind);
      log.warn({ kind, err: err && { message: err.message, code: err.code }, path: pathOf(req.url) }, 'upstream request failed');
      // An answer already under way is cut, never passed off as whole; a complete one stays as it was.
      if (res.headersSent) {
        if (!res.writableEnded) res.destroy();
        return;
      }
      if (kind === 'connect_timeout' || kind === 'response_timeout') sendError(res, 504, 'upstream_timeout');
      else sendError(res, 502, 'bad_gateway'); // names no host, port or error: internal addresses stay inside
    };
    // Timed from the connection to the response head, restarted by each piece of request body, so a slow
    // upload is not cut; never after the head, so a streaming answer (SSE, a download) runs as long as it lasts.
    const waitForAnswer = () => {
      clearTimeout(timer);
      phase = 'wait';
      timer = setTimeout(() => fail('response_timeout'), answerMs);
    };
    up.once('socket', (socket) => {
      if (socket.connecting) socket.once(secure ? 'secureConnect' : 'connect', waitForAnswer);
      else waitForAnswer();
    });
    req.on('data', () => {
      if (phase === 'wait') timer.refresh();
    });

    up.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNRESET' && !req.socket.writable) gone = true;
      fail(err.code?.startsWith('HPE_') ? 'malformed' : phase === 'connect' ? 'unreachable' : 'reset', err);
    });
    // RFC 9110 §15.2.2: a server switches protocols only when the request asked to (ours never do).
    up.on('upgrade', (_answer, socket) => {
      socket.destroy();
      fail('malformed', new Error('101 Switching Protocols to a request that asked for no upgrade'));
    });
    // Whatever else ends the exchange without an answer, the browser is not left waiting.
    up.on('close', () => {
      clearTimeout(timer);
      if (!res.headersSent) fail('reset');
    });
    const away = () => {
      if (res.writableFinished) return;
      gone = true;
      up.destroy(); // stop the upstream request too
    };
    req.on('error', away);
    res.on('close', away);

    up.on('response', (answer) => {
      phase = 'answer';
      clearTimeout(timer);
      const status = answer.statusCode ?? 0;
      // RFC 9110 §15: a status outside 100..599 is invalid and is handled as a server error; a 1xx is no
      // final answer (Node handles 100 and 103 itself, and 101 is the upgrade above).
      if (status < 200 || status > 599) return fail('malformed', new Error(`status ${status}`));
      const headers = downstreamHeaders(answer.headers);
      // RFC 9112 §6.1: no Transfer-Encoding towards an HTTP/1.0 client, nor on a 204 or 304.
      if (req.httpVersion === '1.0' || status === 204 || status === 304) delete headers['transfer-encoding'];
      for (const [name, value] of Object.entries(headers)) {
        if (value === undefined) continue;
        try {
          res.setHeader(name, value);
        } catch {
          // A field Node refuses to send (invalid characters) is dropped, not turned into a 502 mid-answer.
        }
      }
      let phrase = answer.statusMessage;
      if (phrase !== undefined && !REASON_PHRASE.test(phrase)) {
        metrics.upstreamError('malformed');
        log.warn({ kind: 'malformed', status, path: pathOf(req.url) }, 'upstream reason phrase has invalid characters; not sent on');
        phrase = undefined; // Node sends the status's standard phrase
      }
      res.writeHead(status, phrase);
      // The upstream answered before reading the whole body: stop sending it, and close that connection (it
      // can serve no other request now); drain the browser's rest, so its connection stays usable.
      answer.once('end', () => {
        if (up.writableFinished) return;
        req.unpipe(up);
        req.resume();
        up.destroy();
      });
      // RFC 9112 §6.3: an answer to HEAD, and a 204 or 304, ends with its head; what follows it is no part of it.
      if (status === 204 || status === 304 || req.method === 'HEAD') {
        res.end();
        answer.resume();
        return;
      }
      answer.on('error', (err) => fail('reset', err));
      answer.on('close', () => {
        if (!answer.complete) fail('reset');
      });
      answer.pipe(res);
    });
    req.pipe(up);
  };

  return { guard, forward, close: () => agent.destroy() };
}
