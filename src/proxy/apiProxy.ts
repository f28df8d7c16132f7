/**
 * /api → upstream, on node:http directly: the request streams to the upstream over a keep-alive connection
 * and the answer streams back (nothing is buffered, so uploads and SSE stream both ways).
 *
 * Why not http-proxy-middleware (DESIGN.md's stack): under load its generic machinery (option merging, a
 * pipeline of passes, event plumbing) cost more CPU than everything else on the hot path together, and
 * Gatehouse uses none of its options (issue 6: the hot path near the cost of a bare Node proxy). What it did
 * that matters here is kept below, each with its reason.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import { pathOf, type Step } from '../http/exchange';
import { clientAddress } from '../http/clientAddress';
import type { Logger } from '../log/logger';
import { sendError } from '../http/errors';
import { upstreamPath } from './pathGuard';
import { downstreamHeaders, framingNamedInConnection, upstreamHeaders } from './headers';

export interface ApiProxy {
  /** R49: refuses paths that would leave the upstream base, TRACE/CONNECT, and smuggling-shaped headers. */
  guard: Step;
  /** Injects the bearer (from res.locals.accessToken) and forwards. */
  forward: Step;
  close(): void;
}

export function createApiProxy(upstream: URL, publicOrigin: string, trustedHops: number, log: Logger): ApiProxy {
  const secure = upstream.protocol === 'https:';
  const client = secure ? https : http;
  const agent = new client.Agent({ keepAlive: true, maxSockets: 512 });
  const base = upstream.pathname.replace(/\/+$/, '');
  const target = { protocol: upstream.protocol, hostname: upstream.hostname, port: Number(upstream.port) || (secure ? 443 : 80), agent };
  const publicUrl = new URL(publicOrigin);
  const proto = publicUrl.protocol.slice(0, -1);

  const failed = (err: NodeJS.ErrnoException, req: IncomingMessage, res: ServerResponse) => {
    // The browser went away first: nothing to answer, nothing worth a warning.
    if (err.code === 'ECONNRESET' && !req.socket.writable) return;
    log.warn({ err: { message: err.message, code: err.code }, path: pathOf(req.url) }, 'upstream request failed');
    if (res.headersSent) return void res.destroy();
    sendError(res, 502, 'bad_gateway'); // R65: names no host, port or error
  };

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
    const headers = upstreamHeaders(req.headers, {
      method: req.method,
      accessToken: res.locals.accessToken as string,
      clientIp: clientAddress(req, trustedHops),
      proto,
      host: publicUrl.host,
      upstreamHost: upstream.host,
    });
    const up = client.request({ ...target, method: req.method, path: base + (res.locals.upstreamPath as string), headers });
    up.on('error', (err) => failed(err, req, res));
    req.on('error', () => up.destroy());
    // The browser went away before the answer was complete: stop the upstream request too.
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });
    up.on('response', (answer) => relay(req, res, up, answer));
    req.pipe(up);
  };

  return { guard, forward, close: () => agent.destroy() };
}

/** Status, headers (R50, R51: headers.ts) and body of the upstream's answer, streamed to the browser. */
function relay(req: IncomingMessage, res: ServerResponse, up: http.ClientRequest, answer: IncomingMessage): void {
  const headers = downstreamHeaders(answer.headers);
  const status = answer.statusCode ?? 502;
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
  res.statusCode = status;
  if (answer.statusMessage) res.statusMessage = answer.statusMessage;
  // The upstream answered before reading the whole body: stop sending it and drain the browser's rest, so
  // its connection stays usable.
  answer.once('end', () => {
    if (!up.writableFinished) {
      req.unpipe(up);
      req.resume();
    }
  });
  answer.on('close', () => {
    if (!answer.complete && !res.destroyed) res.destroy();
  });
  answer.on('error', () => res.destroy());
  res.on('close', () => answer.destroy());
  answer.pipe(res);
}
