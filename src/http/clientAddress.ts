/**
 * The browser's address, trusting X-Forwarded-For only as far as the configured number of proxy hops
 * (GATEHOUSE_TRUST_PROXY). /api has no Express request to ask for `req.ip`, so this asks what Express asks:
 * proxy-addr, with Express' own trust function for a hop count (`trust proxy` = N trusts the N nearest).
 */
import type { IncomingMessage } from 'node:http';
import proxyaddr from 'proxy-addr';

export function clientAddress(req: IncomingMessage, trustedHops: number): string | undefined {
  // Express 5 compileTrust(N): (_address, i) => i < N; with no hop trusted, the socket's peer.
  if (trustedHops <= 0) return req.socket.remoteAddress;
  return proxyaddr(req, (_address, i) => i < trustedHops);
}
