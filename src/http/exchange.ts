/**
 * The request and response the /api steps are written against: plain node:http plus the few fields they
 * share. /api runs on node:http directly (app.ts: Express' per-request work was most of what the
 * gateway cost beyond a bare proxy); /auth runs on Express, whose Request and Response are these and more,
 * so a step written against these (CSRF, cookie guard, session rules, errors) runs in both.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Request } from 'express';
import type { CookieState } from './cookieGuard';
import type { GatehouseSession } from '../session/sessionData';
import type { RouteMatch } from '../api/routes';
import type { UpstreamToken } from '../tokens/dpop';

/** A request, with the session express-session or the /api session loader put on it (when there is one). */
export type HttpRequest = IncomingMessage & Pick<Request, 'session' | 'sessionID' | 'sessionStore'>;

/**
 * What the steps of one request tell the steps after them (Express' `res.locals` on /auth; the API lane
 * makes its own). Each field is set by one step, named here.
 */
export interface Locals {
  /** cookieGuard: whether a session cookie was sent (a 401 then clears it). */
  cookie?: CookieState;
  /** The API lane's guard: the path and query below /api, checked. */
  upstreamPath?: string;
  /** The API lane: the route serving the request, and the path and query below it. */
  route?: RouteMatch;
  /** The session rules: the live session, its idle window slid. */
  session?: GatehouseSession;
  /** attachAccessToken (or the client token step): the access token to send upstream, with its DPoP key if bound. */
  token?: UpstreamToken;
  /** A WebSocket upgrade: the browser's connection and what it sent past the request's head. */
  upgrade?: { socket: Duplex; head: Buffer };
}

/** A response, with the values passed between steps. */
export type HttpResponse = ServerResponse & { locals: Locals };

export type Next = (err?: unknown) => void;

/** One step of a pipeline, Express middleware-shaped: answers, or calls next (with an error to fail). */
export type Step = (req: HttpRequest, res: HttpResponse, next: Next) => void | Promise<void>;

/** The path of a request target, without its query. */
export function pathOf(url: string | undefined): string {
  const u = url ?? '/';
  const q = u.indexOf('?');
  return q < 0 ? u : u.slice(0, q);
}
