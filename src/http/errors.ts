/**
 * Errors carry a stable code and a status; only the code (and a fixed human message) leaves the process
 * (node-oidc-provider's `expose = status < 500`). The cause goes to the log, never to the browser.
 * No stack, no exception text, no internal address, no IdP error_description in any body.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ErrorRequestHandler } from 'express';
import { pathOf } from './exchange';
import { StoreUnavailableError } from '../store/kv';
import type { Logger } from '../log/logger';

export const MESSAGES = {
  unauthenticated: 'No valid session. Log in at /auth/login.',
  session_expired: 'The session has ended. Log in again at /auth/login.',
  csrf: 'Cross-site request refused. Send X-CSRF: 1 from the same origin.',
  bad_request: 'The request is malformed.',
  method_not_allowed: 'Method not allowed.',
  not_found: 'Not found.',
  bad_gateway: 'The upstream service could not be reached.',
  upstream_timeout: 'The upstream service did not answer in time. Retry shortly.',
  upstream_busy: 'Too many requests of this session are in progress upstream. Retry shortly.',
  too_many_requests: 'Too many requests. Retry later.',
  too_many_sockets: 'Too many WebSockets are open for this session. Close one first.',
  session_store_unavailable: 'The session store is unavailable. Retry shortly.',
  token_refresh_unavailable: 'The identity provider is unavailable. Retry shortly.',
  login_failed: 'The login could not be completed. Start again at /auth/login.',
  invalid_request: 'The request is invalid.',
  payload_too_large: 'The request body is too large.',
  identity_provider_unavailable: 'The identity provider is unavailable. Retry shortly.',
  internal_error: 'Internal error.',
} as const;

export type ErrorCode = keyof typeof MESSAGES;

export class GatewayError extends Error {
  override readonly name = 'GatewayError';
  constructor(
    readonly code: ErrorCode,
    readonly status: number,
    options?: { cause?: unknown; headers?: Record<string, string> },
  ) {
    super(code, options?.cause === undefined ? undefined : { cause: options.cause });
    this.headers = options?.headers ?? {};
  }
  readonly headers: Record<string, string>;
}

/** The JSON error answer (what Express' res.json would write, on plain node:http: /api runs without Express). */
export function sendError(res: ServerResponse, status: number, code: ErrorCode, headers: Record<string, string> = {}): void {
  const body = JSON.stringify({ error: code, message: MESSAGES[code] });
  res.statusCode = status;
  for (const name of Object.keys(headers)) res.setHeader(name, headers[name]!);
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(body); // Node sends no body to a HEAD request
}

/** Seconds a client should wait before retrying a 503 caused by the store or the IdP. */
export const RETRY_AFTER_SECONDS = 2;

export function errorHandler(log: Logger): ErrorRequestHandler {
  return (err: unknown, req, res, _next) => answerError(log, err, req, res);
}

/** The answer to an error thrown or passed on by a step, on Express or on plain node:http. */
export function answerError(log: Logger, err: unknown, req: IncomingMessage, res: ServerResponse): void {
  const path = pathOf(req.url);
  if (res.headersSent) {
    log.warn({ err, path }, 'error after the response started; closing the connection');
    res.destroy();
    return;
  }
  if (err instanceof GatewayError) {
    if (err.status >= 500) log.warn({ err, code: err.code, path }, 'request failed');
    sendError(res, err.status, err.code, err.headers);
    return;
  }
  if (err instanceof StoreUnavailableError) {
    log.warn({ err: err.cause, path }, 'session store unavailable');
    sendError(res, 503, 'session_store_unavailable', { 'Retry-After': String(RETRY_AFTER_SECONDS) });
    return;
  }
  const status = (err as { status?: unknown }).status;
  const type = (err as { type?: unknown }).type;
  if (type === 'entity.too.large') return sendError(res, 413, 'payload_too_large');
  if (err instanceof URIError || (typeof status === 'number' && status >= 400 && status < 500)) return sendError(res, 400, 'bad_request');
  log.error({ err, path }, 'unexpected error');
  sendError(res, 500, 'internal_error');
}
