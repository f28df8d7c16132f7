/**
 * `npm run sessions -- <command>`: the kill switch from a shell, against the Redis the environment names
 * (GATEHOUSE_* variables as for `npm start`). Ends sessions on every replica at once and revokes their
 * refresh tokens at the IdP.
 *
 *   npm run sessions -- list   --sub <sub> [--env <file>]
 *   npm run sessions -- revoke --sub <sub> [--session <hash>] [--env <file>]
 *
 * --env reads more variables from a dotenv file (Node's format, the one `node --env-file` reads; the flag is not
 * named --env-file because Node takes that one for itself wherever it appears); variables already in the
 * environment win. `npm run demo` with Redis writes its gateway's to .env.demo for this.
 *
 * Times are unix seconds. Exit codes: 0 done, 1 failure (Redis unreachable, or the IdP refused a revocation),
 * 2 bad usage or configuration (a GATEHOUSE_SESSION_SECRET that opens none of the stored sessions included).
 */
import { readFileSync } from 'node:fs';
import { parseArgs, parseEnv } from 'node:util';
import { Cluster } from 'ioredis';
import { createGatehouse, loadConfig, ConfigError, type Config } from '../src';
import { createLogger } from '../src/log/logger';
import { createRedis, waitForRedis, type RedisClient } from '../src/store/redisClient';
import { Keyring } from '../src/session/keyring';
import { openIndexEntry } from '../src/session/sessionIndex';
import { inSeconds } from '../src/admin/adminApp';

const USAGE = 'usage: npm run sessions -- list --sub <sub> | revoke --sub <sub> [--session <hash>] [--env <file>]';

async function main(): Promise<number> {
  let command: string | undefined;
  let sub: string | undefined;
  let session: string | undefined;
  let envFile: string | undefined;
  try {
    const { positionals, values } = parseArgs({
      options: { sub: { type: 'string' }, session: { type: 'string' }, env: { type: 'string' } },
      allowPositionals: true,
    });
    [command] = positionals;
    ({ sub, session, env: envFile } = values);
  } catch (err) {
    process.stderr.write(`sessions: ${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if ((command !== 'list' && command !== 'revoke') || !sub || (command === 'list' && session)) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  if (envFile !== undefined) {
    let text: string;
    try {
      text = readFileSync(envFile, 'utf8');
    } catch (err) {
      const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
      process.stderr.write(
        `sessions: --env ${envFile}: ${missing ? 'no such file (npm run demo writes .env.demo only while it runs with GATEHOUSE_REDIS_URL)' : (err as Error).message}\n`,
      );
      return 2;
    }
    // As `node --env-file` does: a variable the environment already has keeps its value.
    for (const [name, value] of Object.entries(parseEnv(text))) process.env[name] ??= value;
  }
  let cfg;
  try {
    cfg = loadConfig(process.env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    for (const p of err.problems) process.stderr.write(`sessions: ${p}\n`);
    return 2;
  }
  if (!cfg.redisUrl || !cfg.redis) {
    process.stderr.write('sessions: GATEHOUSE_REDIS_URL: is required here — the in-memory store lives inside one gateway process\n');
    return 2;
  }
  const log = createLogger(cfg.logLevel === 'info' ? 'warn' : cfg.logLevel);
  const redis = createRedis(cfg.redis, log);
  if (!(await waitForRedis(redis, 3000))) log.warn({}, 'redis is not reachable yet');
  // Needs only Redis: the kill switch works while the IdP is down (revocations are then retried, then logged).
  const gatehouse = await createGatehouse(cfg, { logger: log, redis, sweepExpired: false });
  const wrongSecret = async () => {
    if (!(await storedUnderOtherSecrets(redis, cfg))) return false;
    process.stderr.write(
      `sessions: sessions are stored under GATEHOUSE_KEY_PREFIX "${cfg.keyPrefix}" but none opens with GATEHOUSE_SESSION_SECRET: it is not the gateway's secret\n`,
    );
    return true;
  };
  try {
    if (command === 'list') {
      const sessions = await gatehouse.sessions.list(sub);
      if (sessions.length === 0 && (await wrongSecret())) return 2;
      process.stdout.write(`${JSON.stringify({ sessions: inSeconds(sessions) })}\n`);
    } else {
      const report = await gatehouse.sessions.revoke(session === undefined ? { sub } : { sub, session });
      if (report.ended === 0 && (await wrongSecret())) return 2;
      process.stdout.write(`${JSON.stringify(report)}\n`);
      if (report.failed > 0) {
        process.stderr.write(
          `sessions: ${report.failed} refresh token(s) could not be revoked at the IdP (see the log); the sessions are ended all the same\n`,
        );
        return 1;
      }
    }
    return 0;
  } finally {
    await gatehouse.close(); // waits for the refresh-token revocations under way
    await redis.quit().catch(() => redis.disconnect());
  }
}

/** Index entries looked at, at most, before concluding that none opens (SCAN order is the keys' hash order). */
const SAMPLED_INDEXES = 100;

/**
 * True when sessions are stored under the key prefix and none of those looked at opens with the configured
 * secrets. Keys are keyed hashes, so a wrong secret finds no index at all and would answer like a user
 * without sessions; the entries of the by-subject indexes, though, open with the secret alone.
 */
async function storedUnderOtherSecrets(redis: RedisClient, cfg: Config): Promise<boolean> {
  const keyring = new Keyring(cfg.sessionSecrets, cfg.keyPrefix);
  const pattern = keyring.indexKeyPattern('sub');
  let seen = 0;
  for (const node of redis instanceof Cluster ? redis.nodes('master') : [redis]) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 500);
      cursor = next;
      for (const key of keys) {
        for (const [hash, sealed] of Object.entries(await node.hgetall(key))) {
          if (openIndexEntry(keyring, key, hash, sealed)) return false;
        }
        if (++seen >= SAMPLED_INDEXES) return true;
      }
    } while (cursor !== '0');
  }
  return seen > 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`sessions: ${(err as Error).message}\n`);
    process.exit(1);
  },
);
