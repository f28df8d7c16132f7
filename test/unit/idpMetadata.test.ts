import { metadataProblems } from '../../src/idp/idp';
import { parseRoutes } from '../../src/api/routes';

const routes = (raw: unknown) => parseRoutes(raw, { upstream: undefined, timeoutSeconds: 30 }, 'routes', () => undefined);
const meta = (extra: Record<string, unknown>) => ({ issuer: 'https://idp.example', ...extra });

describe('settings the IdP’s metadata makes impossible stop start-up', () => {
  it('a client route at an IdP without the client_credentials grant', () => {
    const cfg = {
      par: 'auto' as const,
      dpop: false,
      settingNames: 'env' as const,
      routes: routes([{ path: '/api/m', upstream: 'http://m', token: 'client' }]),
    };
    expect(metadataProblems(cfg, meta({ grant_types_supported: ['authorization_code', 'refresh_token'] }))).toEqual([
      'GATEHOUSE_ROUTES: /api/m use token "client", but the IdP does not offer the client_credentials grant — enable it there or change the route',
    ]);
    expect(metadataProblems(cfg, meta({ grant_types_supported: ['client_credentials'] }))).toEqual([]);
    // RFC 8414: without grant_types_supported nothing is known, and nothing is refused
    expect(metadataProblems(cfg, meta({}))).toEqual([]);
  });

  it('par required without an endpoint, and par off at an IdP that requires it, named as the environment names them', () => {
    const r = routes(undefined);
    expect(metadataProblems({ par: 'required', dpop: false, settingNames: 'env', routes: r }, meta({}))).toEqual([
      'GATEHOUSE_PAR: required, but the IdP offers no pushed authorization request endpoint — set it to auto or off',
    ]);
    expect(
      metadataProblems(
        { par: 'off', dpop: false, settingNames: 'option', routes: r },
        meta({ require_pushed_authorization_requests: true }),
      ),
    ).toEqual(['par: off, but the IdP requires pushed authorization requests — set it to auto or required']);
  });

  it('dpop on at an IdP that accepts no ES256 proofs', () => {
    const cfg = { par: 'auto' as const, dpop: true, settingNames: 'option' as const, routes: routes(undefined) };
    const problem = 'dpop: true, but the IdP does not accept DPoP proofs signed with ES256 — enable DPoP there or set it to false';
    expect(metadataProblems(cfg, meta({}))).toEqual([problem]);
    expect(metadataProblems(cfg, meta({ dpop_signing_alg_values_supported: ['EdDSA'] }))).toEqual([problem]);
    expect(metadataProblems(cfg, meta({ dpop_signing_alg_values_supported: ['EdDSA', 'ES256'] }))).toEqual([]);
  });
});
