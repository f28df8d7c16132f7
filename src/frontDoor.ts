/**
 * The one entry point of every HTTP request: a plain node:http request listener, built from public APIs only.
 * A request for the API lane's paths (`/api`, below it, or with a query) goes to the lane on node:http;
 * everything else goes to the Express app (`/auth/*`, health, static files). A WebSocket upgrade is no
 * request but the server's `upgrade` event: `frontDoor.upgrade` takes it to the lane's WebSocket steps (404
 * outside /api); Express never sees one.
 *
 *   const server = http.createServer(gatehouse.frontDoor);   // standalone (what `npm start` runs)
 *   server.on('upgrade', gatehouse.frontDoor.upgrade);      // WebSocket routes
 *   request(gatehouse.frontDoor)                            // supertest
 *   hostApp.use(gatehouse.frontDoor)                        // inside your Express app: what Gatehouse does not
 *                                                           // serve (outside /api and /auth) goes on to your next handler
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Express } from 'express';
import { sendError } from './http/errors';
import { upgradeAnswer, type ApiLane } from './api/lane';

export type FrontDoor = ((req: IncomingMessage, res: ServerResponse, next?: (err?: unknown) => void) => void) & {
  /** The server's `upgrade` listener: `server.on('upgrade', frontDoor.upgrade)`. */
  readonly upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => void;
};

/**
 * `/api` itself, below it, or with a query, case-insensitive as Express' routing was (`/API/x` reaches the
 * lane's path guard and is refused there), and `/api\…`, which a URL parser could read as `/api/…`: refused
 * there too. An absolute-form target does not start with `/` and goes to Express, which refuses it.
 */
const API_TARGET = /^\/api(?:[/?#\\]|$)/i;

/** An Express app called as middleware (how `app.use(subApp)` calls it): what it leaves unanswered goes to `next`. */
type Middleware = (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => void;

export function createFrontDoor(lanes: { api: ApiLane; app: Express }): FrontDoor {
  const express = lanes.app as unknown as Middleware; // @types/express types only the two-argument call
  const frontDoor = (req: IncomingMessage, res: ServerResponse, next?: (err?: unknown) => void): void => {
    if (API_TARGET.test(req.url ?? '')) return lanes.api.request(req, res);
    express(req, res, next ?? (() => sendError(res, 404, 'not_found')));
  };
  const upgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    if (API_TARGET.test(req.url ?? '')) return lanes.api.upgrade(req, socket, head);
    sendError(upgradeAnswer(req, socket as Socket, head), 404, 'not_found');
  };
  return Object.assign(frontDoor, { upgrade });
}
