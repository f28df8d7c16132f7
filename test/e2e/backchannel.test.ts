import { idpAgent, idpLogout, loginAs } from '../support/login';
import { startStack, SPA, type Stack } from '../support/stack';

describe('back-channel logout with the real IdP (OIDC Back-Channel Logout 1.0)', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack({ backchannel: true });
  });
  afterAll(() => s.close());

  it('ends the gateway session when the user logs out at the IdP', async () => {
    const jar = idpAgent(s.idp);
    const browser = s.gw.agent();
    await loginAs(browser, s.idp, 'olga', { idpAgent: jar });
    const other = s.gw.agent();
    await loginAs(other, s.idp, 'olga'); // another IdP session of the same user: not ended by a sid logout
    await browser.get('/api/x').set(SPA).expect(200);

    await idpLogout(jar, s.idp, `${s.idp.issuer}/session/end`);
    expect(s.idp.backchannelLogouts.at(-1)).toMatchObject({ ok: true, accountId: 'olga' });

    await browser.get('/api/x').set(SPA).expect(401);
    await browser.get('/auth/session').set(SPA).expect(401);
    await other.get('/api/x').set(SPA).expect(200);
  });

  it('answers GET with 405', async () => {
    await s.gw.agent().get('/auth/backchannel-logout').expect(405);
  });
});
