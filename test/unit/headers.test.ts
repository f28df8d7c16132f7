import {
  DROPPED_REQUEST_HEADERS,
  DROPPED_REQUEST_HEADER_PREFIXES,
  droppedNames,
  upstreamHeaders,
  type Forwarded,
} from '../../src/api/headers';

const FWD: Forwarded = {
  method: 'POST',
  accessToken: 'token',
  clientIp: '203.0.113.7',
  proto: 'https',
  host: 'app.example',
  upstreamHost: 'api.internal',
};

/** The names upstreamHeaders() forwards from `headers` (the gateway's own fields left out). */
function forwarded(headers: Record<string, string>, drop?: ReadonlySet<string>): string[] {
  const list = upstreamHeaders({ 'content-length': '2', ...headers }, FWD, drop);
  const names = list.filter((_v, i) => i % 2 === 0);
  const own = new Set(['content-length', 'host', 'authorization', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host']);
  return names.filter((n) => !own.has(n));
}

describe('upstreamHeaders: headers an upstream may trust', () => {
  it('drops every listed name and every name of a listed family', () => {
    const forged = [...DROPPED_REQUEST_HEADERS, ...DROPPED_REQUEST_HEADER_PREFIXES.map((p) => `${p}something`)];
    expect(forwarded(Object.fromEntries(forged.map((n) => [n, 'forged'])))).toEqual([]);
  });

  it('drops a listed name spelt with underscores, which CGI-style servers read as the dashed one', () => {
    const forged = ['X_Forwarded_User', 'remote_user', 'x_auth_request_email', 'x_real_ip', 'X-Amzn_Oidc-Identity', 'cookie_'];
    expect(forwarded(Object.fromEntries(forged.map((n) => [n.toLowerCase(), 'forged'])))).toEqual(['cookie_']);
    const drop = droppedNames(['x-tenant-id']);
    expect(forwarded({ x_tenant_id: 't', x_request_id: 'r' }, drop)).toEqual(['x_request_id']);
  });

  it('keeps the fields an API needs', () => {
    const kept = ['accept', 'accept-language', 'content-type', 'if-none-match', 'x-request-id', 'traceparent', 'x-client-version'];
    expect(forwarded(Object.fromEntries(kept.map((n) => [n, 'v'])))).toEqual(kept);
  });

  it('drops the names an operator adds, but never the framing of the body', () => {
    const drop = droppedNames(['x-tenant-id', 'content-length', 'transfer-encoding', 'host']);
    expect(forwarded({ 'x-tenant-id': 't', 'x-other': 'o' }, drop)).toEqual(['x-other']);
    const list = upstreamHeaders({ 'content-length': '7' }, FWD, drop);
    expect(list.slice(0, 2)).toEqual(['content-length', '7']);
    // and the built-in names stay dropped
    expect(forwarded({ 'x-real-ip': '1.2.3.4', cookie: 'a=b' }, drop)).toEqual([]);
  });
});
