/**
 * The only composition root that touches the process: reads the environment, starts the gateway,
 * listens, and drains on SIGTERM. Bad configuration: one line per problem on stderr, exit code 2.
 */
import http from 'node:http';
import { loadConfig, ConfigError } from './config/loadConfig';
import { createGatehouse } from './gatehouse';
import { createLogger } from './log/logger';
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
  const gatehouse = await createGatehouse(cfg, { logger: log });
  const server = guardServer(http.createServer(gatehouse.app));
  server.listen(cfg.port, () => log.info({ port: cfg.port, publicUrl: cfg.publicOrigin }, 'gatehouse listening'));
  // The admin port never answers on the public port, and the public port never serves admin routes.
  const admin = cfg.metricsPort > 0 ? http.createServer(gatehouse.adminApp) : undefined;
  admin?.listen(cfg.metricsPort, () => log.info({ port: cfg.metricsPort }, 'admin port listening'));

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'draining');
    const force = setTimeout(() => {
      log.warn({}, 'drain timed out; closing open connections');
      server.closeAllConnections();
    }, 10_000).unref();
    admin?.close();
    admin?.closeAllConnections();
    server.close(() => {
      void gatehouse.close().finally(() => {
        clearTimeout(force);
        process.exit(0);
      });
    });
    server.closeIdleConnections();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err: unknown) => {
  process.stderr.write(`gatehouse: failed to start: ${(err as Error).message}\n`);
  process.exit(1);
});
