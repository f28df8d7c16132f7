import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { loginAs } from '../support/login';
import { redisUrl, startStack, SPA, type Stack } from '../support/stack';

/**
 * A store fault in the middle of the callback (after the code exchange, while the token record is written)
 * must leave no half-made session: no session cookie, nothing in Redis. The fault is real: an ACL user of
 * the test Redis that may not write token records, so the token record's compare-and-set fails.
 */
describe('callback with a failing token-record write', () => {
  const user = `gatehouse-noscript-${randomBytes(4).toString('hex')}`;
  const password = randomBytes(16).toString('hex');
  let admin: Redis;
  let s: Stack;

  beforeAll(async () => {
    admin = new Redis(redisUrl());
    await admin.call('ACL', 'SETUSER', user, 'on', `>${password}`, '~*', '&*', '+@all');
    const url = new URL(redisUrl());
    url.username = user;
    url.password = password;
    s = await startStack({ gateway: { redisUrl: url.href } });
    // From now on the gateway may write every key of its own but token records (`t:`), scripts included.
    await admin.call('ACL', 'SETUSER', user, 'resetkeys', '%R~*', `~${s.prefix}[^t]*`);
  });
  afterAll(async () => {
    await s.close();
    await admin.call('ACL', 'DELUSER', user);
    await admin.quit();
  });

  it('answers 503 session_store_unavailable, sets no session cookie and leaves no session in Redis', async () => {
    const browser = s.gw.agent();
    const cb = await loginAs(browser, s.idp, 'heidi');
    expect(cb.status).toBe(503);
    expect((cb.body as { error: string }).error).toBe('session_store_unavailable');
    const cookies = ([] as string[]).concat(cb.headers['set-cookie'] ?? []);
    expect(cookies.filter((c) => c.startsWith('gatehouse='))).toEqual([]);
    const keys = await s.redis!.keys(`${s.prefix}[st]:*`);
    expect(keys).toEqual([]);
    await browser.get('/auth/session').set(SPA).expect(401);
  });
});
