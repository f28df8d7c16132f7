/**
 * Request headers an upstream behind an auth proxy commonly trusts (who the user is, where the request came
 * from, which method or URL it "really" has) never reach it from the browser, and an operator can name more.
 */
import { loginAs } from '../support/login';
import { SPA, startStack, type Stack } from '../support/stack';
import { issuedCookie, rawRequest } from '../support/security';

/** Identity, client-address, routing and client-certificate assertions, as a browser could forge them. */
const FORGED = [
  'Remote-User',
  'Remote-Groups',
  'Remote-Email',
  'X-Remote-User',
  'X-Remote-Addr',
  'X-Email',
  'X-Preferred-Username',
  'X-Forwarded-User',
  'X-Forwarded-Email',
  'X-Forwarded-Groups',
  'X-Forwarded-Preferred-Username',
  'X-Forwarded-Access-Token',
  'X-Forwarded-Port',
  'X-Forwarded-Server',
  'X-Forwarded-Client-Cert',
  'Forwarded',
  'X-Auth-Request-User',
  'X-Auth-Request-Email',
  'X-Auth-Request-Access-Token',
  'X-Authenticated-Userid',
  'X-Authenticated-Groups',
  'X-Amzn-Oidc-Data',
  'X-Amzn-Oidc-Identity',
  'X-Amzn-Oidc-Accesstoken',
  'X-Ms-Client-Principal',
  'X-Ms-Client-Principal-Name',
  'X-Ms-Client-Principal-Id',
  'X-Ms-Client-Principal-Idp',
  'X-Goog-Authenticated-User-Email',
  'X-Goog-Authenticated-User-Id',
  'X-Goog-Iap-Jwt-Assertion',
  'X-Id-Token',
  'X-Access-Token',
  'X-Api-Key',
  'X-Consumer-Id',
  'X-Consumer-Username',
  'X-Consumer-Custom-Id',
  'X-Userinfo',
  'X-User',
  'X-User-Id',
  'X-Username',
  'X-Webauth-User',
  'CF-Connecting-IP',
  'Cf-Access-Authenticated-User-Email',
  'X-Real-IP',
  'X-Cluster-Client-IP',
  'Client-IP',
  'Fastly-Client-IP',
  'True-Client-IP',
  'X-Client-IP',
  'X-Originating-IP',
  'X-ProxyUser-Ip',
  'X-Original-Host',
  'X-Original-URL',
  'X-Original-URI',
  'X-Rewrite-URL',
  'X-Host',
  'X-HTTP-Method-Override',
  'X-HTTP-Method',
  'X-Method-Override',
  'X-Ssl-Client-Cert',
  'X-Ssl-Client-Verify',
  'X-Ssl-Client-S-Dn',
  'X-Client-Cert',
  'X-Client-Verify',
  'Ssl-Client-Cert',
];

describe('headers an upstream may trust', () => {
  let s: Stack;
  let cookie: string;

  beforeAll(async () => {
    s = await startStack();
    cookie = `gatehouse=${issuedCookie(await loginAs(s.gw.agent(), s.idp, 'headers-user'), 'gatehouse').value}`;
  });
  afterAll(() => s.close());

  it('no identity, client-address, routing or client-certificate header the browser sends reaches the upstream', async () => {
    const forged = Object.fromEntries(FORGED.map((name, i) => [name, `forged-${i}`]));
    const r = await rawRequest(s.gw.url, {
      method: 'POST',
      path: '/api/things',
      headers: { ...SPA, Cookie: cookie, 'Content-Type': 'application/json', 'X-Request-Id': 'kept-1', ...forged },
      body: '{"a":1}',
    });
    expect(r.status).toBe(200);
    const seen = s.upstream.last();
    const passed = FORGED.filter((name) => seen.headers[name.toLowerCase()] !== undefined);
    expect(passed).toEqual([]);
    expect(JSON.stringify(seen.rawHeaders)).not.toContain('forged-');
    // Everything else still goes through.
    expect(seen.headers['x-request-id']).toBe('kept-1');
    expect(seen.headers['content-type']).toBe('application/json');
    expect(seen.body).toBe('{"a":1}');
  });

  it('an operator adds names to drop (dropHeaders), and cannot drop the framing of the body by listing it', async () => {
    const inst = await s.addInstance({ dropHeaders: 'X-Tenant-Id, X-Impersonate, Content-Length, Transfer-Encoding, Host' });
    for (const body of ['{"framed":"by length"}', undefined]) {
      const r = await rawRequest(inst.url, {
        method: 'POST',
        path: '/api/things',
        headers: {
          ...SPA,
          Cookie: cookie,
          'X-Tenant-Id': 'other-tenant',
          'X-Impersonate': 'admin',
          'X-Request-Id': 'kept-2',
          ...(body === undefined && { 'Transfer-Encoding': 'chunked' }),
        },
        body: body ?? '{"framed":"in chunks"}',
      });
      expect(r.status).toBe(200);
      const seen = s.upstream.last();
      expect(seen.headers['x-tenant-id']).toBeUndefined();
      expect(seen.headers['x-impersonate']).toBeUndefined();
      expect(seen.headers['x-request-id']).toBe('kept-2');
      expect(seen.body).toBe(body ?? '{"framed":"in chunks"}');
    }
  });
});
