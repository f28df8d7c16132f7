/**
 * `npm run sessions -- <command>`: the kill switch from a shell, against the Redis the environment names
 * (GATEHOUSE_* variables as for `npm start`). Ends sessions on every replica at once and revokes their
 * refresh tokens at the IdP.
 *
 *   npm run sessions -- list   --sub <sub>
 *   npm run sessions -- revoke --sub <sub> [--session <hash>]
 *
 * Exit codes: 0 done, 1 failure (Redis or IdP unreachable), 2 bad usage or configuration.
 */
import { parseArgs } from 'node:util';
import { createGatehouse, loadConfig, ConfigError } from '../src';
import { createLogger } from '../src/log/logger';

const USAGE = 'usage: npm run sessions -- list --sub <sub> | revoke --sub <sub> [--session <hash>]';

async function main(): Promise<number> {
  let command: string | undefined;
  let sub: string | undefined;
  let session: string | undefined;
  try {
    const { positionals, values } = parseArgs({
      options: { sub: { type: 'string' }, session: { type: 'string' } },
      allowPositionals: true,
    });
    [command] = positionals;
    ({ sub, session } = values);
  } catch (err) {
    process.stderr.write(`sessions: ${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if ((command !== 'list' && command !== 'revoke') || !sub || (command === 'list' && session)) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  let cfg;
  try {
    cfg = loadConfig(process.env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    for (const p of err.problems) process.stderr.write(`sessions: ${p}\n`);
    return 2;
  }
  if (!cfg.redisUrl) {
    process.stderr.write('sessions: GATEHOUSE_REDIS_URL: is required here — the in-memory store lives inside one gateway process\n');
    return 2;
  }
  // Needs only Redis: the kill switch works while the IdP is down (revocations are then retried, then logged).
  const gatehouse = await createGatehouse(cfg, {
    logger: createLogger(cfg.logLevel === 'info' ? 'warn' : cfg.logLevel),
    sweepExpired: false,
  });
  try {
    if (command === 'list') {
      process.stdout.write(`${JSON.stringify({ sessions: await gatehouse.sessions.list(sub) })}\n`);
    } else {
      const revoked = await gatehouse.sessions.revoke(session === undefined ? { sub } : { sub, session });
      process.stdout.write(`${JSON.stringify({ revoked })}\n`);
    }
    return 0;
  } finally {
    await gatehouse.close(); // waits for the refresh-token revocations under way
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`sessions: ${(err as Error).message}\n`);
    process.exit(1);
  },
);
