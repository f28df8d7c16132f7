/**
 * CONNECT answers 405 method_not_allowed, like any method Gatehouse does not serve. Node hands CONNECT to the server's 'connect' event,
 * never to Express (and closes the socket when nobody listens), so the answer is written here.
 */
import type { Server } from 'node:http';
import { MESSAGES } from './errors';

const BODY = JSON.stringify({ error: 'method_not_allowed', message: MESSAGES.method_not_allowed });
const RESPONSE = [
  'HTTP/1.1 405 Method Not Allowed',
  'Allow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS',
  'Content-Type: application/json; charset=utf-8',
  `Content-Length: ${Buffer.byteLength(BODY)}`,
  'Connection: close',
  '',
  BODY,
].join('\r\n');

/** Call once on the http.Server that serves a Gatehouse app. */
export function guardServer(server: Server): Server {
  server.on('connect', (_req, socket) => {
    socket.on('error', () => undefined);
    socket.end(RESPONSE);
  });
  return server;
}
