/**
 * R64: the browser's address, trusting X-Forwarded-For only as far as the configured number of proxy hops
 * (GATEHOUSE_TRUST_PROXY). It is what Express' `req.ip` gives with `trust proxy` set to that number
 * (proxy-addr): the socket's peer, then the X-Forwarded-For entries from right to left, and the first one
 * past the trusted hops, or the leftmost when there are fewer. /api has no Express request to ask.
 */
import type { IncomingMessage } from 'node:http';

export function clientAddress(req: IncomingMessage, trustedHops: number): string | undefined {
  const peer = req.socket.remoteAddress;
  const raw = req.headers['x-forwarded-for']; // Node joins repeated fields with ', '
  const header = Array.isArray(raw) ? raw.join(', ') : raw;
  if (trustedHops <= 0 || !header) return peer;
  let hop = 0;
  let address = peer;
  let end = header.length;
  // Entries right to left, each trimmed of spaces; empty ones skipped (as proxy-addr's `forwarded` does).
  for (let i = header.length - 1; i >= -1 && hop < trustedHops; i--) {
    if (i >= 0 && header.charCodeAt(i) !== 0x2c) continue;
    const entry = trimSpaces(header.slice(i + 1, end));
    end = i;
    if (entry === '') continue;
    address = entry;
    hop++;
  }
  return address;
}

/** Spaces only, as proxy-addr (a tab is part of the entry there, and so here). */
function trimSpaces(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && s.charCodeAt(a) === 0x20) a++;
  while (b > a && s.charCodeAt(b - 1) === 0x20) b--;
  return s.slice(a, b);
}
