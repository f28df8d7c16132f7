/**
 * A SCRIPTED fake OpenID provider, for the misbehaviour a real IdP (src/testing/testIdp.ts) cannot produce:
 * forged or malformed ID tokens, odd token-endpoint bodies and statuses (a real IdP cannot be made to send
 * them, so a small scripted one does). It implements just enough OIDC for openid-client 6:
 *
 * - `GET /.well-known/openid-configuration`: issuer, authorization/token/revocation/end-session endpoints, jwks_uri,
 *   `id_token_signing_alg_values_supported: ['RS256']`, `code_challenge_methods_supported: ['S256']`, optionally
 *   `userinfo_endpoint` and `authorization_response_iss_parameter_supported: true`;
 * - `GET /jwks`: one RS256 public key (the 'good' key);
 * - `POST /token`: records every request and answers from a queue the test fills with `next()`;
 * - `POST /revoke`: records, 200; `GET /userinfo` (when enabled): `{sub}` of the access token.
 *
 * There is no authorization endpoint: a test reads the gateway's 302 Location from `/auth/login` (state, nonce,
 * code_challenge, redirect_uri) and builds the callback URL itself.
 *
 *   const idp = await startFakeIdp();
 *   const login = await agent.get('/auth/login').redirects(0);          // Location → idp.authorizationEndpoint?...
 *   const nonce = new URL(login.headers.location).searchParams.get('nonce')!;
 *   idp.next(await idp.tokenResponse({ nonce, sub: 'alice' }));        // 200 JSON
 *   idp.next(() => ({ status: 400, body: { error: 'invalid_grant' } })); // or any status/body/headers
 *   await agent.get(`/auth/callback?code=c1&state=${state}`);
 *   idp.tokenRequests[0].codeVerifier                                   // what the gateway sent
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { SignJWT, exportJWK, generateKeyPair, type JWK } from 'jose';

export interface FakeIdpOptions {
  /** default 'gatehouse-fake-client' */
  clientId?: string;
  /** default a random 43-character string */
  clientSecret?: string;
  /** advertise RFC 9207 `authorization_response_iss_parameter_supported: true` (default false: not advertised) */
  issParameterSupported?: boolean;
  /** advertise and serve a userinfo endpoint (default false) */
  userinfo?: boolean;
  /** extra or overriding discovery metadata (a value of undefined removes the member) */
  metadata?: Record<string, unknown>;
}

/** One token-endpoint POST, as received. */
export interface FakeTokenRequest {
  grantType: string | null;
  code: string | null;
  codeVerifier: string | null;
  redirectUri: string | null;
  refreshToken: string | null;
  scope: string | null;
  /** the raw Authorization header (undefined when none was sent) */
  authorization: string | undefined;
  /** client_secret_basic credentials decoded from `authorization` (RFC 6749 §2.3.1: form-urlencoded id and secret), else null */
  basic: { clientId: string; clientSecret: string } | null;
  /** every form parameter (the last value of a repeated one) */
  params: Record<string, string>;
  /** the raw form body */
  body: string;
  headers: http.IncomingHttpHeaders;
}

/** A token-endpoint answer. `body`: an object is sent as JSON; a string is sent as it is (text/plain unless `headers` say otherwise). */
export interface FakeReply {
  status?: number;
  body?: unknown;
  headers?: Record<string, string>;
}

/** What `next()` takes: a 200 JSON token response, or a handler computing any reply from the request. */
export type TokenScript = Record<string, unknown> | ((req: FakeTokenRequest) => FakeReply | Promise<FakeReply>);

/**
 * - 'good': RS256, the key in the JWKS (default);
 * - 'other': RS256 by a key NOT in the JWKS, with the good key's `kid` unless `header.kid` says otherwise;
 * - 'none': `alg: none`, empty signature;
 * - 'hs256-with-client-secret': HS256 keyed with the client secret (the classic alg-confusion forgery).
 */
export type FakeKey = 'good' | 'other' | 'none' | 'hs256-with-client-secret';

export interface IdTokenOptions {
  /** `nonce` claim; omitted when undefined */
  nonce?: string;
  /** `sub` claim (default 'alice') */
  sub?: string;
  /** claim overrides, merged last; a value of undefined removes the claim */
  claims?: Record<string, unknown>;
  /** protected-header overrides (e.g. `kid`, `typ`); `alg` follows `key` */
  header?: Record<string, unknown>;
  key?: FakeKey;
}

export interface TokenResponseOptions extends IdTokenOptions {
  /** default a random `fake-at-...` */
  accessToken?: string;
  /** default a random `fake-rt-...`; null = no refresh_token member */
  refreshToken?: string | null;
  /** default 300; null = no expires_in member */
  expiresIn?: number | null;
  /** default 'Bearer' */
  tokenType?: string;
  /** the id_token to send; default one minted from the IdTokenOptions; null = no id_token member */
  idToken?: string | null;
  /** extra members, merged last (a value of undefined removes the member) */
  extra?: Record<string, unknown>;
}

export interface FakeIdp {
  /** `http://127.0.0.1:<port>` */
  readonly issuer: string;
  readonly clientId: string;
  readonly clientSecret: string;
  readonly authorizationEndpoint: string;
  readonly tokenEndpoint: string;
  /** the public JWKS served at jwks_uri */
  readonly jwks: { keys: JWK[] };
  /** every token-endpoint POST, in arrival order */
  readonly tokenRequests: FakeTokenRequest[];
  /** every revocation POST's form parameters */
  readonly revocations: Array<Record<string, string>>;
  /** every request the fake IdP received (`METHOD /path?query`) */
  readonly requests: string[];
  /** token requests that arrived with nothing queued (answered 500); a test should normally see 0 */
  readonly unscripted: number;
  /** queue the answer to the next token request */
  next(script: TokenScript): void;
  /** number of queued answers not yet used */
  readonly queued: number;
  /** drop queued answers */
  clearQueue(): void;
  /** a compact JWS ID token: valid by default (iss, aud = client_id, sub, iat now, exp now+300, the nonce given) */
  idToken(opts?: IdTokenOptions): Promise<string>;
  /** a 200 token response body: access_token, token_type Bearer, expires_in, refresh_token, id_token (see options) */
  tokenResponse(opts?: TokenResponseOptions): Promise<Record<string, unknown>>;
  close(): Promise<void>;
}

const b64url = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
const randomToken = (prefix: string) => `${prefix}${randomBytes(16).toString('hex')}`;

/** Object with the members whose value is undefined removed. */
function defined(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.once('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.once('error', reject);
  });
}

function decodeBasic(header: string | undefined): FakeTokenRequest['basic'] {
  const m = /^Basic ([A-Za-z0-9+/=]+)$/i.exec(header ?? '');
  if (!m?.[1]) return null;
  const text = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = text.indexOf(':');
  if (colon < 0) return null;
  const form = (s: string) => decodeURIComponent(s.replace(/\+/g, ' '));
  try {
    return { clientId: form(text.slice(0, colon)), clientSecret: form(text.slice(colon + 1)) };
  } catch {
    return null;
  }
}

function send(res: http.ServerResponse, reply: FakeReply): void {
  const status = reply.status ?? 200;
  const isText = typeof reply.body === 'string';
  const text = reply.body === undefined ? '' : isText ? (reply.body as string) : JSON.stringify(reply.body);
  res.writeHead(status, {
    'content-type': isText ? 'text/plain; charset=utf-8' : 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(text),
    ...reply.headers,
  });
  res.end(text);
}

export async function startFakeIdp(opts: FakeIdpOptions = {}): Promise<FakeIdp> {
  const clientId = opts.clientId ?? 'gatehouse-fake-client';
  const clientSecret = opts.clientSecret ?? randomBytes(32).toString('base64url');
  const good = await generateKeyPair('RS256');
  const other = await generateKeyPair('RS256');
  const kid = `fake-${randomBytes(4).toString('hex')}`;
  const jwks = { keys: [{ ...(await exportJWK(good.publicKey)), kid, alg: 'RS256', use: 'sig' }] };

  const tokenRequests: FakeTokenRequest[] = [];
  const revocations: Array<Record<string, string>> = [];
  const requests: string[] = [];
  const queue: TokenScript[] = [];
  const subOfAccessToken = new Map<string, string>();
  let unscripted = 0;
  let issuer = '';

  const metadata = (): Record<string, unknown> =>
    defined({
      issuer,
      authorization_endpoint: `${issuer}/authorize`,
      token_endpoint: `${issuer}/token`,
      jwks_uri: `${issuer}/jwks`,
      revocation_endpoint: `${issuer}/revoke`,
      end_session_endpoint: `${issuer}/session/end`,
      ...(opts.userinfo && { userinfo_endpoint: `${issuer}/userinfo` }),
      response_types_supported: ['code'],
      grant_types_supported: ['authorization_code', 'refresh_token'],
      subject_types_supported: ['public'],
      scopes_supported: ['openid', 'profile', 'email', 'offline_access'],
      id_token_signing_alg_values_supported: ['RS256'],
      code_challenge_methods_supported: ['S256'],
      token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
      ...(opts.issParameterSupported && { authorization_response_iss_parameter_supported: true }),
      ...opts.metadata,
    });

  async function token(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const body = await readBody(req);
    const form = new URLSearchParams(body);
    const record: FakeTokenRequest = {
      grantType: form.get('grant_type'),
      code: form.get('code'),
      codeVerifier: form.get('code_verifier'),
      redirectUri: form.get('redirect_uri'),
      refreshToken: form.get('refresh_token'),
      scope: form.get('scope'),
      authorization: req.headers.authorization,
      basic: decodeBasic(req.headers.authorization),
      params: Object.fromEntries(form),
      body,
      headers: req.headers,
    };
    tokenRequests.push(record);
    const script = queue.shift();
    if (script === undefined) {
      unscripted++;
      send(res, { status: 500, body: { error: 'server_error', error_description: 'fake IdP: no scripted answer' } });
      return;
    }
    send(res, typeof script === 'function' ? await script(record) : { status: 200, body: script });
  }

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://fake-idp.invalid');
    requests.push(`${req.method ?? 'GET'} ${url.pathname}${url.search}`);
    const route = `${req.method} ${url.pathname}`;
    const done = (p: Promise<void>) =>
      p.catch((err: unknown) => {
        if (!res.headersSent) send(res, { status: 500, body: { error: 'server_error', error_description: String(err) } });
        else res.destroy();
      });
    switch (route) {
      case 'GET /.well-known/openid-configuration':
        return send(res, { body: metadata() });
      case 'GET /jwks':
        return send(res, { body: jwks, headers: { 'content-type': 'application/jwk-set+json' } });
      case 'POST /token':
        return void done(token(req, res));
      case 'POST /revoke':
        return void done(
          readBody(req).then((b) => {
            revocations.push(Object.fromEntries(new URLSearchParams(b)));
            send(res, { status: 200, body: '' });
          }),
        );
      case 'GET /userinfo':
      case 'POST /userinfo': {
        if (!opts.userinfo) break;
        const at = /^Bearer (\S+)$/i.exec(req.headers.authorization ?? '')?.[1];
        const sub = at === undefined ? undefined : subOfAccessToken.get(at);
        if (sub === undefined)
          return send(res, {
            status: 401,
            body: { error: 'invalid_token' },
            headers: { 'www-authenticate': 'Bearer error="invalid_token"' },
          });
        return send(res, { body: { sub } });
      }
    }
    send(res, { status: 404, body: { error: 'not_found' } });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  async function idToken(o: IdTokenOptions = {}): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    const claims = defined({
      iss: issuer,
      aud: clientId,
      sub: o.sub ?? 'alice',
      iat: now,
      exp: now + 300,
      nonce: o.nonce,
      ...o.claims,
    });
    const key = o.key ?? 'good';
    switch (key) {
      case 'none':
        return `${b64url({ alg: 'none', typ: 'JWT', ...o.header })}.${b64url(claims)}.`;
      case 'hs256-with-client-secret':
        return new SignJWT(claims)
          .setProtectedHeader({ typ: 'JWT', ...o.header, alg: 'HS256' })
          .sign(new TextEncoder().encode(clientSecret));
      case 'good':
      case 'other':
        return new SignJWT(claims)
          .setProtectedHeader({ typ: 'JWT', kid, ...o.header, alg: 'RS256' })
          .sign((key === 'good' ? good : other).privateKey);
    }
  }

  async function tokenResponse(o: TokenResponseOptions = {}): Promise<Record<string, unknown>> {
    const accessToken = o.accessToken ?? randomToken('fake-at-');
    subOfAccessToken.set(accessToken, o.sub ?? 'alice');
    return defined({
      access_token: accessToken,
      token_type: o.tokenType ?? 'Bearer',
      expires_in: o.expiresIn === null ? undefined : (o.expiresIn ?? 300),
      refresh_token: o.refreshToken === null ? undefined : (o.refreshToken ?? randomToken('fake-rt-')),
      id_token: o.idToken === null ? undefined : (o.idToken ?? (await idToken(o))),
      scope: 'openid profile email offline_access',
      ...o.extra,
    });
  }

  return {
    issuer,
    clientId,
    clientSecret,
    authorizationEndpoint: `${issuer}/authorize`,
    tokenEndpoint: `${issuer}/token`,
    jwks,
    tokenRequests,
    revocations,
    requests,
    get unscripted() {
      return unscripted;
    },
    next: (script) => void queue.push(script),
    get queued() {
      return queue.length;
    },
    clearQueue: () => void queue.splice(0),
    idToken,
    tokenResponse,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
