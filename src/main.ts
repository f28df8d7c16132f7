/**
 * The only composition root that touches the process: reads the environment, starts the gateway,
 * listens, and drains on SIGTERM. Bad configuration: one line per problem on stderr, exit code 2.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadConfig, ConfigError } from './config/loadConfig';
import { createGatehouse, type Gatehouse } from './gatehouse';
import { createLogger, type Logger } from './log/logger';
import { guardServer } from './http/serverGuards';
import type { Config } from './config/schema';

async function main(): Promise<void> {
  let cfg: Config;
  try {
    cfg = loadConfig(process.env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    for (const problem of err.problems) process.stderr.write(`gatehouse: ${problem}\n`);
    process.exit(2);
  }
  const log = createLogger(cfg.logLevel);
  const gatehouse = await createGatehouse(cfg, { logger: log }).catch((err: unknown) => {
    // What only the IdP's metadata shows (e.g. GATEHOUSE_PAR=required at an IdP without it) stops start-up too.
    if (!(err instanceof ConfigError)) throw err;
    for (const problem of err.problems)
      process.stderr.write(`gatehouse: ${problem}
`);
    process.exit(2);
  });
  const server = guardServer(http.createServer(gatehouse.frontDoor));
  server.on('upgrade', gatehouse.frontDoor.upgrade);
  listen(server, 'GATEHOUSE_PORT', cfg.port, undefined, () =>
    log.info({ port: cfg.port, publicUrl: cfg.publicOrigin }, 'gatehouse listening'),
  );
  // The admin port never answers on the public port, and the public port never serves admin routes.
  // GATEHOUSE_ADMIN_HOST keeps it off the network (127.0.0.1); unset, Prometheus can scrape the pod address.
  const admin = cfg.metricsPort > 0 ? http.createServer(gatehouse.adminApp) : undefined;
  if (admin) {
    const settings = cfg.adminHost === undefined ? 'GATEHOUSE_METRICS_PORT' : 'GATEHOUSE_ADMIN_HOST, GATEHOUSE_METRICS_PORT';
    listen(admin, settings, cfg.metricsPort, cfg.adminHost, () => {
      const { address, port } = admin.address() as AddressInfo;
      log.info({ host: address, port }, 'admin port listening');
    });
  }

  let draining = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (draining) {
      // A second signal means "don't wait" (Ctrl+C twice). 130 tells a shell the run was interrupted; a
      // second SIGTERM exits 0 like the first would have.
      log.warn({ signal }, 'second signal: exiting without finishing the drain');
      process.exit(signal === 'SIGINT' ? 130 : 0);
    }
    draining = true;
    void drain(signal, cfg.shutdownSeconds * 1000, { server, admin, gatehouse, log }).finally(() => process.exit(0));
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

/**
 * Listens on `host` (undefined: every interface). An address that cannot be had (in use, not this machine's)
 * stops the process with one line naming the setting, not an unhandled 'error' event's stack trace.
 */
function listen(server: http.Server, settings: string, port: number, host: string | undefined, onListening: () => void): void {
  const failed = (err: NodeJS.ErrnoException) => {
    const where = host === undefined ? `port ${port}` : `${host} port ${port}`;
    process.stderr.write(`gatehouse: ${settings}: cannot listen on ${where}: ${err.code ?? err.message}\n`);
    process.exit(1);
  };
  server.once('error', failed);
  const listening = () => {
    server.off('error', failed);
    onListening();
  };
  if (host === undefined) server.listen(port, listening);
  else server.listen(port, host, listening);
}

/**
 * Lets requests in flight finish (a refresh holding its lock, a slow upstream call) and open streams go on
 * until the deadline, then cuts what is left, finishes background work and closes Redis, all within `ms`.
 */
async function drain(
  signal: string,
  ms: number,
  { server, admin, gatehouse, log }: { server: http.Server; admin?: http.Server; gatehouse: Gatehouse; log: Logger },
): Promise<void> {
  const started = Date.now();
  const deadline = started + ms;
  // /readyz answers 503 first, so a load balancer that still has this instance stops sending it traffic.
  gatehouse.drain();
  log.info({ signal, shutdownSeconds: ms / 1000 }, 'draining');
  const closed = new Promise<void>((resolve) => server.close(() => resolve())); // also closes idle keep-alive connections
  // A keep-alive connection whose request ends during the drain would otherwise linger until keepAliveTimeout.
  const idle = setInterval(() => server.closeIdleConnections(), 100);
  // Connections are cut a little before the deadline: the rest is for the refreshes and revocations they
  // started and for closing Redis, so the process still exits in time.
  const cut = deadline - Math.min(1000, ms / 5);
  const inTime = await Promise.race([closed.then(() => true), sleep(cut - Date.now()).then(() => false)]);
  clearInterval(idle);
  // Open WebSockets kept the server open until now: they are closed cleanly (1001 going away) before the rest is cut.
  await gatehouse.closeSockets();
  const forceClosed = inTime ? 0 : await promisify(server.getConnections.bind(server))();
  server.closeAllConnections();
  // The admin API can end sessions (and start revocations): closed before the gateway waits for those.
  admin?.close();
  admin?.closeAllConnections();
  const closing = gatehouse.close().catch((err: unknown) => log.warn({ err }, 'closing the gateway failed'));
  const closedInTime = await Promise.race([closing.then(() => true), sleep(deadline - Date.now()).then(() => false)]);
  log.info({ forceClosed, closedInTime, seconds: (Date.now() - started) / 1000 }, 'drained');
}

main().catch((err: unknown) => {
  process.stderr.write(`gatehouse: failed to start: ${(err as Error).message}\n`);
  process.exit(1);
});
