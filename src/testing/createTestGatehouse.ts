/**
 * A whole Gatehouse for a user's tests in one call: a real OpenID provider (oidc-provider, in-process), an
 * upstream, the memory store or Redis, and the gateway listening on an ephemeral port whose URL is its public
 * URL, registered at the IdP, so loginAs() runs the real login flow.
 *
 *   const gw = await createTestGatehouse();              // afterAll(() => gw.close())
 *   const agent = request.agent(gw.app);
 *   await loginAs(agent, 'alice');
 *   await agent.get('/api/orders').set('X-CSRF', '1').expect(200);
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { createGatehouse, type Gatehouse, type GatehouseDeps } from '../gatehouse';
import type { GatehouseOptions } from '../config/schema';
import { guardServer } from '../http/serverGuards';
import { startTestIdp, type TestIdp, type TestIdpOptions } from './testIdp';
import { startEchoUpstream, type EchoUpstream } from './echoUpstream';
import { closeServer, reserveServer, type ReservedServer } from './testServer';

export interface TestGatehouseOptions {
  /** A running test IdP (shared, not closed by close()), or options for one started here (and closed by close()). */
  idp?: TestIdp | TestIdpOptions;
  /** Base URL for /api/* (your own API under test). Default: an echo upstream started here (see EchoResponse). */
  upstream?: string;
  /**
   * Redis for sessions and tokens (`redis://...`). Default: the in-memory store. Keys go under a key prefix of
   * their own, deleted by close() (unless `gateway.keyPrefix` chose the prefix: then they are the caller's).
   */
  redisUrl?: string;
  /**
   * More createGatehouse() options, over the defaults here: the IdP's issuer and client, publicUrl = `url`,
   * a random session secret, refreshSkewSeconds 1 (the test IdP's access tokens live 2 s), no admin port,
   * logLevel 'silent'.
   */
  gateway?: GatehouseOptions;
  /** createGatehouse() dependencies: a logger, a clock, an ioredis client... */
  deps?: GatehouseDeps;
  /** Register `<url>/auth/backchannel-logout` at the IdP started here (OIDC Back-Channel Logout 1.0). */
  backchannel?: boolean;
}

export interface TestGatehouse {
  /**
   * The gateway as supertest wants it: `request.agent(gw.app)`. An http.Server already listening at `url`
   * (so requests arrive at the public origin, and CONNECT is guarded as in production) serving Gatehouse's
   * front door, `gatehouse.frontDoor`. Supertest never closes a server it did not start itself.
   */
  readonly app: ReservedServer;
  /** `http://127.0.0.1:<port>`: where `app` listens; also the public URL unless `gateway.publicUrl` set one. */
  readonly url: string;
  /** The public URL the gateway was configured with (its redirect URIs are registered at the IdP). */
  readonly publicUrl: string;
  readonly idp: TestIdp;
  /** The upstream's base URL. */
  readonly upstream: string;
  readonly gatehouse: Gatehouse;
  /** The Redis key prefix the gateway writes under. */
  readonly keyPrefix: string;
  /** Closes what was started here: the server, the gateway, the echo upstream and the IdP (unless passed in). */
  close(): Promise<void>;
}

function isRunningIdp(idp: TestIdp | TestIdpOptions): idp is TestIdp {
  return typeof (idp as Partial<TestIdp>).close === 'function' && typeof (idp as Partial<TestIdp>).issuer === 'string';
}

/** Best effort (the keys expire anyway): the Redis may be the thing a test took down. */
async function deleteKeys(redisUrl: string, prefix: string): Promise<void> {
  const redis = new Redis(redisUrl, {
    lazyConnect: true,
    connectTimeout: 1000,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  redis.on('error', () => undefined);
  try {
    await redis.connect();
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
      cursor = next;
      // one UNLINK per key: with Redis Cluster a multi-key command must stay in one hash slot
      if (keys.length) await keys.reduce((p, key) => p.unlink(key), redis.pipeline()).exec();
    } while (cursor !== '0');
  } catch {
    // leave them to their TTLs
  } finally {
    redis.disconnect();
  }
}

export async function createTestGatehouse(options: TestGatehouseOptions = {}): Promise<TestGatehouse> {
  const givenIdp = options.idp && isRunningIdp(options.idp) ? options.idp : undefined;
  if (givenIdp && options.backchannel) {
    throw new Error('createTestGatehouse: backchannel needs an IdP started here (or start yours with backchannelLogoutUri)');
  }
  const started: { server?: ReservedServer; idp?: TestIdp; echo?: EchoUpstream; gatehouse?: Gatehouse; keys?: () => Promise<void> } = {};
  // The order a deployment stops in: no new requests, then the gateway (it finishes refreshes in flight),
  // then what it talked to.
  const closeAll = async () => {
    const { server, gatehouse, keys, echo, idp } = started;
    await closeServer(server);
    await gatehouse?.close();
    await keys?.();
    await echo?.close();
    await idp?.close();
  };

  try {
    const server = (started.server = await reserveServer());
    const idp =
      givenIdp ??
      (started.idp = await startTestIdp({
        ...(options.backchannel && { backchannelLogoutUri: `${server.url}/auth/backchannel-logout` }),
        ...options.idp, // options, not a running IdP (that is givenIdp)
      }));
    const publicUrl = options.gateway?.publicUrl ?? server.url;
    await idp.allowGateway(publicUrl);

    const upstream = options.upstream ?? (started.echo = await startEchoUpstream()).url;

    const keyPrefix = options.gateway?.keyPrefix ?? `gatehouse-test-${randomBytes(6).toString('hex')}:`;
    const redisUrl = options.gateway?.redisUrl ?? options.redisUrl;
    if (redisUrl !== undefined && options.gateway?.keyPrefix === undefined) started.keys = () => deleteKeys(redisUrl, keyPrefix);

    const gatehouse = (started.gatehouse = await createGatehouse(
      {
        issuer: idp.issuer,
        clientId: idp.clientId,
        clientSecret: idp.clientSecret,
        publicUrl,
        upstream,
        sessionSecret: randomBytes(32).toString('base64url'),
        ...(redisUrl !== undefined && { redisUrl }),
        keyPrefix,
        // the default skew (30 s) is longer than the test IdP's access tokens live: every request would refresh
        refreshSkewSeconds: 1,
        metricsPort: 0,
        logLevel: 'silent',
        // every test logs in from 127.0.0.1, far more often than a person would
        loginRatePerMinute: 100_000,
        ...options.gateway,
      },
      options.deps,
    ));
    server.on('request', gatehouse.frontDoor);
    server.on('upgrade', gatehouse.frontDoor.upgrade);
    guardServer(server);

    let closing: Promise<void> | undefined;
    return {
      app: server,
      url: server.url,
      publicUrl,
      idp,
      upstream,
      gatehouse,
      keyPrefix,
      close: () => (closing ??= closeAll()),
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}
