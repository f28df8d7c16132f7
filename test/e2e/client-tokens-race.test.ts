/**
 * The gateway's own tokens (client credentials) across replicas: a replica that found no token, and then took
 * the lock only after another replica had stored one and let the lock go, must use that token, not ask the IdP
 * again. Two ClientTokens share one real Redis and one real IdP (oidc-provider); the second one's lock request
 * is held until the first has stored its token and released the lock, which makes the race certain.
 */
import { Redis } from 'ioredis';
import { validate } from '../../src/config/loadConfig';
import { Idp } from '../../src/idp/idp';
import { createLogger } from '../../src/log/logger';
import { Keyring } from '../../src/session/keyring';
import { RedisKv } from '../../src/store/redisKv';
import type { Kv } from '../../src/store/kv';
import { ClientTokens } from '../../src/tokens/clientTokens';
import { startTestIdp, type TestIdp } from '../support/idp';
import { uniquePrefix } from '../support/login';
import { redisUrl, SESSION_SECRET } from '../support/stack';
import { waitFor } from '../support/wait';

const MACHINE = 'https://machine.example/';

describe('client tokens: one grant per expiry across replicas', () => {
  let idp: TestIdp;
  let redis: Redis;
  let gatewayIdp: Idp;
  const prefix = uniquePrefix();

  beforeAll(async () => {
    idp = await startTestIdp({ resources: [MACHINE], accessTokenTtl: 60 });
    redis = new Redis(redisUrl());
    const cfg = validate({
      issuer: idp.issuer,
      clientId: idp.clientId,
      clientSecret: idp.clientSecret,
      publicUrl: 'http://127.0.0.1:1',
      upstream: 'http://127.0.0.1:2',
      sessionSecret: SESSION_SECRET,
      routes: JSON.stringify([{ path: '/api/machine', upstream: 'http://127.0.0.1:2', token: 'client', resource: MACHINE }]),
    });
    gatewayIdp = new Idp(cfg, createLogger('silent'));
    await gatewayIdp.start();
  });
  afterAll(async () => {
    redis?.disconnect();
    await idp?.close();
  });

  const replica = (kv: Kv) =>
    new ClientTokens({
      kv,
      keyring: new Keyring([SESSION_SECRET], prefix),
      idp: gatewayIdp,
      log: createLogger('silent'),
      now: Date.now,
      timing: { skewSeconds: 5, marginSeconds: 2 },
      lockWaitMs: 5000,
      dpop: false,
    });

  it('a replica that takes the lock after another stored a token sends that token, with no second grant', async () => {
    const audience = { key: 'machine', route: '/api/machine', resource: MACHINE };
    const kv = new RedisKv(redis);
    let firstDone!: () => void;
    const firstStored = new Promise<void>((resolve) => (firstDone = resolve));
    // The late replica: its lock request waits until the first replica has stored its token and let go.
    const late: Kv = Object.assign(Object.create(kv) as Kv, {
      setIfAbsent: async (key: string, value: string, ttlMs: number) => {
        await firstStored;
        return kv.setIfAbsent(key, value, ttlMs);
      },
    });
    const grants = () => idp.tokenRequests.filter((r) => r.grantType === 'client_credentials' && r.status === 200).length;

    const lateCall = replica(late).accessToken(audience);
    const first = await replica(kv).accessToken(audience);
    // The first replica released its lock without waiting: wait until it is gone from Redis.
    await waitFor('the first replica’s lock to go', async () => (await redis.keys(`${prefix}*lock*`)).length === 0);
    firstDone();
    const second = await lateCall;

    expect(first.kind).toBe('bearer');
    expect(second).toEqual(first);
    expect(grants()).toBe(1);
  });
});
