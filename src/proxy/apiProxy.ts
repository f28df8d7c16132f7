/**
 * /api → upstream with http-proxy-middleware. Bodies stream both ways (no body parser runs before it,
 * nothing is buffered, so SSE works). Connections to the upstream are kept alive.
 */
import http from 'node:http';
import https from 'node:https';
import type { Request, RequestHandler, Response } from 'express';
import { createProxyMiddleware, proxyEventsPlugin, type Plugin } from 'http-proxy-middleware';
import type { Logger } from '../log/logger';
import { sendError } from '../http/errors';
import { upstreamPath } from './pathGuard';
import { framingNamedInConnection, prepareDownstreamHeaders, prepareUpstreamHeaders } from './headers';

export interface ApiProxy {
  /** R49: refuses paths that would leave the upstream base, TRACE/CONNECT, and smuggling-shaped headers. */
  guard: RequestHandler;
  /** Injects the bearer (from res.locals.accessToken) and forwards. */
  forward: RequestHandler;
  close(): void;
}

export function createApiProxy(upstream: URL, publicOrigin: string, log: Logger): ApiProxy {
  const agent =
    upstream.protocol === 'https:'
      ? new https.Agent({ keepAlive: true, maxSockets: 512 })
      : new http.Agent({ keepAlive: true, maxSockets: 512 });
  const publicUrl = new URL(publicOrigin);
  const proto = publicUrl.protocol.slice(0, -1);

  const proxy = createProxyMiddleware<Request, Response>({
    target: upstream.href,
    changeOrigin: true, // Host is the upstream's, never the browser's
    xfwd: false, // we set X-Forwarded-* ourselves, after dropping the browser's
    agent,
    ejectPlugins: true, // no default error page (it echoes the host and path) and no logger plugin
    plugins: [proxyEventsPlugin as unknown as Plugin<Request, Response>],
    on: {
      proxyRes: (proxyRes) => prepareDownstreamHeaders(proxyRes),
      error: (err, req, res) => {
        log.warn(
          {
            err: { message: err.message, code: (err as NodeJS.ErrnoException).code },
            path: req.originalUrl?.split('?')[0],
          },
          'upstream request failed',
        );
        const r = res as Response;
        if (typeof r.writeHead !== 'function') return (res as unknown as { destroy(): void }).destroy();
        if (r.headersSent) return r.destroy();
        sendError(r, 502, 'bad_gateway');
      },
    },
  });

  const guard: RequestHandler = (req, res, next) => {
    if (req.method === 'TRACE' || req.method === 'CONNECT') {
      res.set('Allow', 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS');
      return sendError(res, 405, 'method_not_allowed');
    }
    if (upstreamPath(req.originalUrl) === undefined || framingNamedInConnection(req.headers)) return sendError(res, 400, 'bad_request');
    next();
  };

  const forward: RequestHandler = (req, res, next) => {
    prepareUpstreamHeaders(req.headers, { accessToken: res.locals.accessToken as string, clientIp: req.ip, proto, host: publicUrl.host });
    void proxy(req, res, next);
  };

  return { guard, forward, close: () => agent.destroy() };
}
