/**
 * A gateway under test needs a real origin before it exists: the IdP must know `<publicUrl>/auth/callback`
 * when the login starts, so the port is taken first and the app attached afterwards.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export type ReservedServer = http.Server & {
  /** `http://127.0.0.1:<port>`: use it as the gateway's publicUrl */
  readonly url: string;
  readonly port: number;
};

/**
 * A listening http.Server on 127.0.0.1:<ephemeral> with no handler yet: its URL is known before the gateway
 * exists. Attach the app with `server.on('request', app)`.
 */
export async function reserveServer(): Promise<ReservedServer> {
  const server = http.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  return Object.assign(server, { url: `http://127.0.0.1:${port}`, port });
}

/** closeAllConnections() then close(); resolves also when the server was not listening. */
export function closeServer(server: http.Server | undefined): Promise<void> {
  if (!server) return Promise.resolve();
  return new Promise<void>((resolve) => {
    server.closeAllConnections();
    if (!server.listening) {
      resolve();
      return;
    }
    server.close(() => resolve());
  });
}
