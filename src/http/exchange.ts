/**
 * The request and response the /api steps are written against: plain node:http plus the few fields they
 * share. /api runs on node:http directly (app.ts, issue 6: Express' per-request work was most of what the
 * gateway cost beyond a bare proxy); /auth runs on Express, whose Request and Response are these and more,
 * so a step written against these (CSRF, cookie guard, session rules, errors) runs in both.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Request } from 'express';

/** A request, with the session express-session or the /api session loader put on it (when there is one). */
export type HttpRequest = IncomingMessage & Pick<Request, 'session' | 'sessionID' | 'sessionStore'>;

/** A response, with per-request values passed between steps (Express' `res.locals`; the /api lane makes one). */
export type HttpResponse = ServerResponse & { locals: Record<string, unknown> };

export type Next = (err?: unknown) => void;

/** One step of a pipeline, Express middleware-shaped: answers, or calls next (with an error to fail). */
export type Step = (req: HttpRequest, res: HttpResponse, next: Next) => void | Promise<void>;

/** The path of a request target, without its query. */
export function pathOf(url: string | undefined): string {
  const u = url ?? '/';
  const q = u.indexOf('?');
  return q < 0 ? u : u.slice(0, q);
}
