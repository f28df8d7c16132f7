/**
 * What a valid back-channel logout token ends, and what it leaves behind in Redis.
 * Sessions come from real logins at the test IdP, each through its own IdP cookie jar (so each has its own
 * IdP session and `sid`); tokens are signed with the IdP's real key (signLogoutToken) and POSTed without
 * cookies, as the IdP does. The IdP-initiated end-to-end path is in backchannel.test.ts.
 */
import { isDeepStrictEqual } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import request from 'supertest';
import { decodeJwt } from 'jose';
import { idpAgent, loginAs, type Agent } from '../support/login';
import { dumpRedis, startStack, SPA, type Instance, type Stack } from '../support/stack';
import { waitFor } from '../support/wait';

interface Session {
  agent: Agent;
  sub: string;
  /** the IdP session id from the session's ID token */
  sid: string;
}

/** Logs `sub` in through `inst` with a fresh IdP cookie jar; the sid comes from the ID token the IdP issued. */
async function login(s: Stack, sub: string, inst: Instance = s.gw): Promise<Session> {
  const agent = inst.agent();
  const cb = await loginAs(agent, s.idp, sub, { idpAgent: idpAgent(s.idp) });
  expect(cb.status).toBe(302);
  const idToken = s.idp
    .tokensIssued()
    .filter((t) => t.split('.').length === 3)
    .at(-1)!;
  const claims = decodeJwt(idToken);
  expect(claims.sub).toBe(sub);
  if (typeof claims.sid !== 'string') throw new Error('the IdP put no sid in the ID token');
  return { agent, sub, sid: claims.sid };
}

const alive = async (x: Session) => (await x.agent.get('/api/x').set(SPA)).status;

function backchannel(s: Stack, token: string) {
  return request(s.gw.url).post('/auth/backchannel-logout').type('form').send({ logout_token: token });
}

describe('back-channel logout actions', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack({ backchannel: true, idp: { accessTokenTtl: 60 } });
  });
  afterAll(() => s?.close());

  it('ends only the sessions of the IdP session named by sid', async () => {
    const s1 = await login(s, 'ursula');
    const s2 = await login(s, 'ursula');
    expect(s1.sid).not.toBe(s2.sid);

    await backchannel(s, await s.idp.signLogoutToken({ sid: s1.sid })).expect(200);

    expect(await alive(s1)).toBe(401);
    await s1.agent.get('/auth/session').set(SPA).expect(401);
    expect(await alive(s2)).toBe(200);
  });

  it('ends only the session of that sid when the token names both sub and sid', async () => {
    const s1 = await login(s, 'ulrike');
    const s2 = await login(s, 'ulrike');

    await backchannel(s, await s.idp.signLogoutToken({ sub: 'ulrike', sid: s2.sid })).expect(200);

    expect(await alive(s1)).toBe(200);
    expect(await alive(s2)).toBe(401);
  });

  it('ends every session of the user, and no one else’s, when the token names only sub', async () => {
    const s1 = await login(s, 'umberto');
    const s2 = await login(s, 'umberto');
    const other = await login(s, 'victor');

    await backchannel(s, await s.idp.signLogoutToken({ sub: 'umberto' })).expect(200);

    expect(await alive(s1)).toBe(401);
    expect(await alive(s2)).toBe(401);
    expect(await alive(other)).toBe(200);
  });

  it('ends nothing when the token’s sid belongs to a different sub, and still answers 200', async () => {
    const s1 = await login(s, 'ute');

    await backchannel(s, await s.idp.signLogoutToken({ sub: 'victor', sid: s1.sid })).expect(200);

    expect(await alive(s1)).toBe(200);
  });

  it('refuses a replayed logout token with 400 and never ends the newer session', async () => {
    const first = await login(s, 'uwe');
    const keysBefore = new Set((await dumpRedis(s)).map((k) => k.key));
    const token = await s.idp.signLogoutToken({ sub: 'uwe' });
    await backchannel(s, token).expect(200);
    expect(await alive(first)).toBe(401);

    // The jti is remembered with a TTL, no longer than the token's exp plus a margin: every key expires.
    const { exp } = decodeJwt(token);
    const remembered = (await dumpRedis(s)).filter((k) => !keysBefore.has(k.key));
    expect(remembered.length).toBeGreaterThan(0);
    for (const k of remembered) {
      expect(k.ttl).toBeGreaterThan(0);
      expect(k.ttl).toBeLessThanOrEqual((exp! - Math.floor(Date.now() / 1000) + 300) * 1000);
    }

    const second = await login(s, 'uwe');
    const replay = await backchannel(s, token);
    expect(replay.status).toBe(400);
    expect(replay.body).toMatchObject({ error: 'invalid_request' });
    expect(replay.headers['cache-control']).toBe('no-store');
    expect(await alive(second)).toBe(200);
  });

  it('never ends a session created after the token was issued', async () => {
    const fresh = await login(s, 'ulla');

    const stale = await s.idp.signLogoutToken({ sub: 'ulla', iat: Math.floor(Date.now() / 1000) - 60 });
    await backchannel(s, stale).expect(200);
    expect(await alive(fresh)).toBe(200);

    // Control: the same request issued now does end it, so the survival above came from iat alone.
    await backchannel(s, await s.idp.signLogoutToken({ sub: 'ulla' })).expect(200);
    expect(await alive(fresh)).toBe(401);
  });
});

describe('the sub/sid indexes are cleaned whenever a session ends, and every key keeps a TTL', () => {
  let s: Stack;
  /** a replica with a 2 s idle window, sharing Redis and the key prefix */
  let shortIdle: Instance;
  beforeAll(async () => {
    s = await startStack({ backchannel: true, idp: { accessTokenTtl: 60 } });
    shortIdle = await s.addInstance({ sessionIdleSeconds: 2 });
  });
  afterAll(() => s?.close());

  /** Sum of the fields of every index hash: `<prefix>u:*` (by sub) and `<prefix>p:*` (by sid). */
  async function indexed(): Promise<{ bySub: number; bySid: number }> {
    const r = s.redis!;
    const count = async (pattern: string) => {
      let n = 0;
      for (const key of await r.keys(`${s.prefix}${pattern}`)) {
        // A key listed a moment ago may be gone now (its last entry removed by the expiry sweeper).
        const type = await r.type(key);
        if (type === 'none') continue;
        expect(type).toBe('hash');
        n += await r.hlen(key);
      }
      return n;
    };
    return { bySub: await count('u:*'), bySid: await count('p:*') };
  }

  async function expectEveryKeyHasTtl(): Promise<void> {
    const keys = await dumpRedis(s);
    expect(keys.filter((k) => !(k.ttl > 0)).map((k) => `${k.key} ${k.ttl}`)).toEqual([]);
  }

  // Counts are taken relative to before each case, so one case's leftovers never fail another.
  it('after logout', async () => {
    const base = await indexed();
    const u = await login(s, 'wanda');
    expect(await indexed()).toEqual({ bySub: base.bySub + 1, bySid: base.bySid + 1 });
    await expectEveryKeyHasTtl();

    await u.agent.post('/auth/logout').set(SPA).expect(200);

    expect(await indexed()).toEqual(base);
    await expectEveryKeyHasTtl();
  });

  it('after idle expiry', async () => {
    const base = await indexed();
    const u = await login(s, 'walter', shortIdle);
    expect(await indexed()).toEqual({ bySub: base.bySub + 1, bySid: base.bySid + 1 });

    await sleep(2500);
    expect(await alive(u)).toBe(401);

    // the gateway may notice the expiry on this request or in the background: allow it a few seconds
    await waitFor('the index to be back to its base', async () => isDeepStrictEqual(await indexed(), base), 5000, 100);
    expect(await indexed()).toEqual(base);
    await expectEveryKeyHasTtl();
  });

  it('after back-channel logout by sid and by sub', async () => {
    const base = await indexed();
    const a = await login(s, 'wilma');
    const b = await login(s, 'wilma');
    expect(await indexed()).toEqual({ bySub: base.bySub + 2, bySid: base.bySid + 2 });

    await backchannel(s, await s.idp.signLogoutToken({ sid: a.sid })).expect(200);
    expect(await alive(a)).toBe(401);
    expect(await indexed()).toEqual({ bySub: base.bySub + 1, bySid: base.bySid + 1 });
    await expectEveryKeyHasTtl();

    await backchannel(s, await s.idp.signLogoutToken({ sub: 'wilma' })).expect(200);
    expect(await alive(b)).toBe(401);
    expect(await indexed()).toEqual(base);
    await expectEveryKeyHasTtl();
  });
});
