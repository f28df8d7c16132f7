/**
 * Pushed authorization requests (RFC 9126) against oidc-provider: with them the browser carries only a
 * request_uri; without them (off, or an IdP that does not offer them) the parameters are in the URL; a
 * setting the IdP's metadata makes impossible stops start-up with one line naming it.
 */
import { ConfigError } from '../../src/config/loadConfig';
import { createTestGatehouse, type TestGatehouse, type TestGatehouseOptions } from '../../src/testing';
import { loginAs } from '../support/login';
import { SPA, redisUrl } from '../support/stack';
import request from 'supertest';

const PROTOCOL_PARAMS = ['redirect_uri', 'scope', 'state', 'nonce', 'code_challenge', 'code_challenge_method', 'response_type'];

describe('pushed authorization requests', () => {
  const started: TestGatehouse[] = [];
  afterAll(async () => {
    for (const kit of started) await kit.close();
  });
  const start = async (o: TestGatehouseOptions) => {
    const kit = await createTestGatehouse({ redisUrl: redisUrl(), ...o });
    started.push(kit);
    return kit;
  };
  const loginUrl = async (kit: TestGatehouse) => {
    const r = await request(kit.app).get('/auth/login').expect(302);
    return new URL(String(r.headers.location));
  };
  const logsIn = async (kit: TestGatehouse, sub: string) => {
    const agent = request.agent(kit.app);
    await loginAs(agent, kit.idp, sub);
    await agent.get('/api/x').set(SPA).expect(200);
  };

  it('by default, at an IdP that offers them: the browser carries only client_id and request_uri, and the login completes', async () => {
    const kit = await start({});
    const url = await loginUrl(kit);
    expect([...url.searchParams.keys()].sort()).toEqual(['client_id', 'request_uri']);
    expect(url.searchParams.get('request_uri')).toMatch(/^urn:ietf:params:oauth:request_uri:/);
    await logsIn(kit, 'par-auto');
  });

  it('off: the parameters are in the URL, no request_uri, and the login completes', async () => {
    const kit = await start({ gateway: { par: 'off' } });
    const url = await loginUrl(kit);
    for (const name of PROTOCOL_PARAMS) expect(url.searchParams.get(name)).toBeTruthy();
    expect(url.searchParams.has('request_uri')).toBe(false);
    await logsIn(kit, 'par-off');
  });

  it('auto at an IdP without them: the parameters are in the URL, and the login completes', async () => {
    const kit = await start({ idp: { pushedAuthorizationRequests: 'none' } });
    const url = await loginUrl(kit);
    expect(url.searchParams.get('code_challenge')).toBeTruthy();
    expect(url.searchParams.has('request_uri')).toBe(false);
    await logsIn(kit, 'par-fallback');
  });

  it('required at an IdP that requires them: the login completes through them', async () => {
    const kit = await start({ idp: { pushedAuthorizationRequests: 'required' }, gateway: { par: 'required' } });
    expect((await loginUrl(kit)).searchParams.has('request_uri')).toBe(true);
    await logsIn(kit, 'par-required');
  });

  it.each([
    [
      'required at an IdP without them',
      { idp: { pushedAuthorizationRequests: 'none' as const }, gateway: { par: 'required' } },
      'par: required, but the IdP offers no pushed authorization request endpoint — set it to auto or off',
    ],
    [
      'off at an IdP that requires them',
      { idp: { pushedAuthorizationRequests: 'required' as const }, gateway: { par: 'off' } },
      'par: off, but the IdP requires pushed authorization requests — set it to auto or required',
    ],
  ])('%s: start-up fails with one line naming the setting and the fix', async (_name, o, line) => {
    const failed = await createTestGatehouse({ redisUrl: redisUrl(), ...o }).then(
      (kit) => {
        started.push(kit);
        return undefined;
      },
      (err: unknown) => err,
    );
    expect(failed).toBeInstanceOf(ConfigError);
    expect((failed as ConfigError).problems).toEqual([line]);
  });
});
