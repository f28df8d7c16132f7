/**
 * The leanest WebSocket relay (a child process of the bench, a baseline for the gateway's): every connection
 * piped to the upstream byte for byte, the handshake included. No checks, no frames followed: what relaying
 * a socket through any Node process costs at least.
 *
 *   node bareRelay.js <upstream port>
 */
import net from 'node:net';

const upstreamPort = Number(process.argv[2]);

const server = net.createServer((browser) => {
  const upstream = net.connect(upstreamPort, '127.0.0.1');
  browser.pipe(upstream);
  upstream.pipe(browser);
  for (const [side, other] of [
    [browser, upstream],
    [upstream, browser],
  ] as const) {
    side.on('error', () => side.destroy());
    side.on('close', () => other.destroy());
  }
});
server.listen(0, '127.0.0.1', () => process.send?.({ ready: (server.address() as net.AddressInfo).port }));
process.on('disconnect', () => process.exit(0));
