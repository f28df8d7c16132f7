/**
 * A real OpenID provider for tests: oidc-provider 9 in-process on 127.0.0.1:<ephemeral>,
 * with counters and fault switches on its token endpoint.
 *
 * Behaviour worth knowing (all genuine oidc-provider behaviour, nothing faked unless a fault switch is set):
 * - Refresh tokens always rotate. Presenting an already-rotated refresh token answers 400 invalid_grant AND
 *   revokes the whole grant, so the newest refresh token (and the access tokens) die too.
 * - A refresh token is issued to every client allowed the refresh_token grant (no offline_access/prompt=consent
 *   dance). Unless the granted scope kept `offline_access`, oidc-provider ties the refresh token to the IdP
 *   session (`expiresWithSession`): an IdP logout (end_session) also kills it.
 * - Access tokens are opaque and live `accessTokenTtl` seconds (default 2); clockTolerance is 0 here (oidc-provider's
 *   default 15 s would keep expired access tokens working at userinfo).
 * - Two concurrent refreshes with the same refresh token: one gets 200, the other is reuse (invalid_grant) and the
 *   grant is revoked, so the winner's new refresh token is dead as well (deterministic with the in-memory adapter).
 * - client_secret_basic and client_secret_post are accepted interchangeably (see tokenRequests[].clientAuth).
 * - ID tokens carry sub, email, email_verified, name (conformIdTokenClaims: false); /me (userinfo) works too.
 * - PKCE (S256) is required.
 * - Back-channel logout tokens can be forged on demand (signLogoutToken), signed with the IdP's real key, so tests
 *   can POST validly signed but otherwise bad tokens to a relying party themselves.
 * - The revocation endpoint (RFC 7009) records every POST (revocationRequests) and can be failed (failRevocation).
 * - Refresh-token reuse is reported out of band like a real IdP's event hook (Auth0 log streams, Okta event hooks,
 *   Keycloak admin events): with `reuseWebhook` (or reportReuseTo()), each reuse oidc-provider itself detects is
 *   POSTed to the gateway's admin endpoint as `{"sub", "sid"?, "iss"}` with the admin bearer token (reuseReports).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Provider, errors, type ClientMetadata, type Configuration, type KoaContextWithOIDC } from 'oidc-provider';
import { CompactSign, exportJWK, generateKeyPair, importJWK, type CompactJWSHeaderParameters, type JWK } from 'jose';

export const DEFAULT_CLIENT_ID = 'gatehouse';
export const DEFAULT_CLIENT_SECRET = 'gatehouse-test-client-secret-0123456789abcdef';
/** registered when TestIdpOptions.redirectUri is empty (port 9 = discard: nothing listens there) */
export const PLACEHOLDER_REDIRECT_URI = 'http://127.0.0.1:9/placeholder-redirect-uri';
/** the `events` member a back-channel logout token must carry (OIDC Back-Channel Logout 1.0 §2.4) */
export const BACKCHANNEL_LOGOUT_EVENT = 'http://schemas.openid.net/event/backchannel-logout';

export interface TestIdpOptions {
  /** default 'gatehouse' */
  clientId?: string;
  /** default DEFAULT_CLIENT_SECRET (45 chars) */
  clientSecret?: string;
  /** default 'client_secret_basic' */
  tokenEndpointAuthMethod?: 'client_secret_basic' | 'client_secret_post' | 'client_secret_jwt' | 'private_key_jwt' | 'none';
  /**
   * e.g. `${publicUrl}/auth/callback`; several allowed. May be omitted/empty when the gateway URLs are not known
   * yet (a placeholder is registered; add the real ones later with allowGateway()/addClientUris()).
   */
  redirectUri?: string | string[];
  /** e.g. `${publicUrl}/` */
  postLogoutRedirectUri?: string | string[];
  /** e.g. `${publicUrl}/auth/backchannel-logout`; enables back-channel logout for the client (sid required) */
  backchannelLogoutUri?: string;
  /** access token lifetime in seconds (default 2) */
  accessTokenTtl?: number;
  /**
   * Pushed authorization requests (RFC 9126): 'offered' (default, as oidc-provider ships), 'required' (the
   * IdP refuses authorization requests that were not pushed), or 'none' (no PAR endpoint in its metadata).
   */
  pushedAuthorizationRequests?: 'offered' | 'required' | 'none';
  /**
   * APIs the IdP issues tokens for (RFC 8707 resource indicators): an authorization or refresh request may
   * name them, and a refresh naming one gets a JWT access token whose `aud` is that resource (scopes
   * `api:read api:write` may be granted for each). Another resource is refused with invalid_target. Unset:
   * the feature is off.
   */
  resources?: string[];
  /**
   * DPoP (RFC 9449) is on, as oidc-provider ships it: a token request with a proof gets a DPoP-bound token.
   * `dpopNonce: true` also makes the IdP demand its own nonce in every proof (RFC 9449 §8: the first proof
   * without it is answered `use_dpop_nonce`).
   */
  dpopNonce?: boolean;
  /** refresh token lifetime in seconds (default 3600) */
  refreshTokenTtl?: number;
  /**
   * oidc-provider's clock tolerance in seconds (its default is 15, which keeps expired access tokens usable at
   * userinfo/introspection for 15 s). Default here: 0, so tokens die at their `exp`.
   */
  clockTolerance?: number;
  /** 'auto' (default): interactions finished programmatically with setNextAccount(); 'dev': oidc-provider's HTML forms */
  interactions?: 'auto' | 'dev';
  /**
   * Treat the main client as the IdP's own first-party app: it is granted the scopes it asks for without a
   * consent screen (also after its grant was revoked). Default false: oidc-provider asks for consent at a
   * client's first login ('dev' shows its consent form).
   */
  skipConsent?: boolean;
  /** more registered clients: client metadata (RFC 7591 names), passed to oidc-provider as-is */
  extraClients?: { client_id: string; [metadata: string]: unknown }[];
  /** account used by the next 'auto' login (default 'alice') */
  account?: string;
  /** claims of an account (default: sub, email `<sub>@example.test`, email_verified true, name `Test <sub>`) */
  claims?: (sub: string) => Record<string, unknown>;
  /** port to listen on (default: an ephemeral one) */
  port?: number;
  /** issuer host name: '127.0.0.1' (default, listens on 127.0.0.1 only) or 'localhost' (for browsers; still listens on 127.0.0.1 only) */
  hostname?: '127.0.0.1' | 'localhost';
  /** drop oidc-provider's harmless "oidc-provider WARNING/NOTICE" console lines (default true) */
  quiet?: boolean;
  /**
   * Report each refresh-token reuse oidc-provider detects, as an IdP's event hook would: a JSON POST
   * `{"sub": <account>, "sid"?: <IdP session>, "iss": <issuer>}` with `Authorization: Bearer <token>`, e.g. to
   * a gateway's `http://<admin port>/admin/security/refresh-token-reuse` with its GATEHOUSE_ADMIN_TOKEN.
   * Also settable later with reportReuseTo() (when the admin port is only known once the gateway runs).
   */
  reuseWebhook?: ReuseWebhook;
}

/** Where the test IdP reports refresh-token reuse (TestIdpOptions.reuseWebhook). */
export interface ReuseWebhook {
  url: string;
  /** sent as `Authorization: Bearer <token>` */
  token: string;
}

/** one reuse report sent to the webhook, recorded when sent; `status` or `error` is filled in once answered */
export interface ReuseReportRecord {
  /** the JSON body sent */
  body: { sub: string; sid?: string; iss: string };
  /** HTTP status answered (undefined while in flight or when the POST failed) */
  status?: number;
  /** why the POST failed (network error) */
  error?: string;
}

export interface RefreshFault {
  status: number;
  body: object;
  headers: Record<string, string>;
  /** remaining injections; Infinity = until failRefresh(null) */
  remaining: number;
}

export interface GrantCounters {
  /** token-endpoint POSTs by grant_type, counted on arrival (failed/injected ones included) */
  authorization_code: number;
  refresh_token: number;
  [grantType: string]: number;
}

export type ClientAuthUsed = 'client_secret_basic' | 'client_secret_post' | 'private_key_jwt_or_client_secret_jwt' | 'none';

/** one token-endpoint POST, recorded on arrival; `status` is filled in once it has been answered */
export interface TokenRequestRecord {
  grantType: string;
  /** how the client authenticated (oidc-provider 9 accepts basic and post interchangeably, so check it here) */
  clientAuth: ClientAuthUsed;
  /** the refresh_token presented (refresh_token grant only) */
  refreshToken?: string;
  /** the resource asked for (RFC 8707), if any */
  resource?: string;
  /** the request carried a DPoP proof (RFC 9449 §5) */
  dpop: boolean;
  /** HTTP status answered (undefined while in flight) */
  status?: number;
  /** true when failRefresh answered it without oidc-provider */
  injected: boolean;
}

/** one POST to the revocation endpoint (RFC 7009), recorded on arrival; `status` is filled in once answered */
export interface RevocationRecord {
  /** the `token` parameter presented */
  token: string;
  /** the `token_type_hint` parameter, if any */
  tokenTypeHint?: string;
  clientAuth: ClientAuthUsed;
  /** HTTP status answered (undefined while in flight) */
  status?: number;
  /** true when failRevocation answered it without oidc-provider */
  injected: boolean;
}

export interface BackchannelLogoutRecord {
  ok: boolean;
  clientId: string;
  accountId: string;
  sid: string;
  error?: string;
}

export interface TestIdp {
  /** `http://127.0.0.1:<port>` */
  readonly issuer: string;
  /**
   * oidc-provider's Provider instance, for what the options here do not cover. Typed `unknown` so that the kit's
   * types compile without types for oidc-provider, which ships none (@types/oidc-provider brings @types/koa, which
   * fails with skipLibCheck: false against the typed content-disposition 1 that Express 5 installs). Cast it:
   * `idp.provider as Provider`, with `import type { Provider } from 'oidc-provider'` and @types/oidc-provider.
   */
  readonly provider: unknown;
  readonly clientId: string;
  readonly clientSecret: string;
  /** token endpoint path and URL */
  readonly tokenEndpoint: string;
  /** access token lifetime in seconds (TestIdpOptions.accessTokenTtl) */
  readonly accessTokenTtl: number;
  /**
   * Resolves once every access token issued so far has expired (accessTokenTtl plus half a second), so the
   * gateway's next /api request must refresh: a real wait, the IdP's clock is the real one.
   */
  waitForAccessTokenExpiry(): Promise<void>;
  /**
   * the account the next programmatic ('auto') login signs in as (sticky). A request to /interaction/:uid carrying
   * an `X-Test-Account: <sub>` header (loginAs sends it) overrides it for that login.
   */
  setNextAccount(sub: string): void;

  // ---- counters (see resetCounters) ----
  readonly grants: GrantCounters;
  /** refresh_token requests answered 200 */
  readonly refreshSucceeded: number;
  /** refresh_token requests answered non-200 (genuine errors AND failRefresh injections) */
  readonly refreshFailed: number;
  /**
   * POSTs to the revocation endpoint, counted on arrival: every attempt, including those answered by
   * failRevocation (so retries are visible); see revocationRequests for each one's token and status
   */
  readonly revocations: number;
  /** every revocation-endpoint POST in arrival order (token presented, hint, client auth, status, injected) */
  readonly revocationRequests: ReadonlyArray<RevocationRecord>;
  /** times oidc-provider saw an already-rotated refresh token (it then revoked the whole grant; see reuseWebhook) */
  readonly reuseDetected: number;
  /** every error oidc-provider answered at the token endpoint, e.g. {grantType:'refresh_token', error:'invalid_grant', detail:'refresh token already used'} */
  readonly grantErrors: ReadonlyArray<{ grantType: string; error: string; detail?: string }>;
  /** every token-endpoint POST in arrival order */
  readonly tokenRequests: ReadonlyArray<TokenRequestRecord>;
  /** back-channel logout deliveries attempted by the IdP */
  readonly backchannelLogouts: ReadonlyArray<BackchannelLogoutRecord>;
  /** refresh-token reuse reports sent to the reuse webhook, in order (see reuseWebhook) */
  readonly reuseReports: ReadonlyArray<ReuseReportRecord>;
  /**
   * Report refresh-token reuse to this webhook from now on (null: stop reporting). Replaces
   * TestIdpOptions.reuseWebhook.
   */
  reportReuseTo(hook: ReuseWebhook | null): void;
  /** Resolves once every reuse report sent so far has been answered (or failed), to reuseReports. */
  reuseReportsDelivered(): Promise<ReadonlyArray<ReuseReportRecord>>;
  /** zero every counter and forget grantErrors/tokenRequests/revocationRequests/backchannelLogouts/reuseReports (tokensIssued is kept) */
  resetCounters(): void;

  // ---- fault switches ----
  /**
   * While set, token-endpoint requests with grant_type=refresh_token are answered with `status` and `body`
   * (JSON; default `{error:'temporarily_unavailable'}`, or `{error:'invalid_grant'}` for 400) without reaching
   * oidc-provider. `times` limits how many requests are failed (default: until failRefresh(null)).
   */
  failRefresh(status: number | null, body?: object, opts?: { times?: number; headers?: Record<string, string> }): void;
  /**
   * While set, revocation-endpoint POSTs are answered with `status` and `body` (JSON; default
   * `{error:'temporarily_unavailable'}` for 5xx, `{error:'invalid_request'}` otherwise) without reaching
   * oidc-provider, so nothing is revoked. They still count in `revocations` and appear in revocationRequests
   * (`injected: true`). `times` limits how many requests are failed (default: until failRevocation(null)).
   */
  failRevocation(status: number | null, body?: object, opts?: { times?: number }): void;
  /**
   * Delay every token-endpoint response by `ms` (0 = off). phase 'before' (default): wait before oidc-provider
   * handles the request; 'after': oidc-provider has already handled it (the refresh token is already rotated)
   * when the wait starts.
   */
  delay(ms: number, phase?: 'before' | 'after'): void;
  /**
   * register more redirect / post-logout redirect URIs on an already running IdP (default: the main client),
   * e.g. for a second gateway instance on another port
   */
  addClientUris(uris: { redirectUri?: string | string[]; postLogoutRedirectUri?: string | string[] }, clientId?: string): Promise<void>;
  /** addClientUris for a gateway at `publicUrl`: `<publicUrl>/auth/callback` and `<publicUrl>/` */
  allowGateway(publicUrl: string, clientId?: string): Promise<void>;
  /** revoke every grant (and its access/refresh tokens and codes) of that account; resolves to the number of grants */
  revoke(sub: string): Promise<number>;

  /** every access/refresh/ID token string the token endpoint returned, in order */
  tokensIssued(): string[];
  /**
   * A back-channel logout token (OIDC Back-Channel Logout 1.0 §2.4) signed with the IdP's real signing key
   * (RS256, the key in its JWKS), to POST to a relying party yourself: forge tokens that are validly signed
   * but wrong in every other way.
   *
   * Claims default to a valid token apart from the subject: `iss` (this issuer), `aud` (the main client id),
   * `iat` (now), `exp` (now + 120), a random `jti` and `events: {<BACKCHANNEL_LOGOUT_EVENT>: {}}`. Add `sub`
   * and/or `sid` (a token needs at least one). `claims` are merged over the defaults; a key set to `undefined`
   * is removed (`{ jti: undefined }` makes a token without `jti`).
   *
   * The protected header defaults to `{alg:'RS256', kid:<the signing key's kid>, typ:'logout+jwt'}` and
   * `header` is merged the same way (`{ kid: 'unknown' }`, `{ typ: 'at+jwt' }`, `{ typ: undefined }`, a `jwk`
   * or `jku` member...). `alg` must stay RS256: use jose directly for tokens signed with other keys.
   */
  signLogoutToken(claims?: Record<string, unknown>, header?: Record<string, unknown>): Promise<string>;
  close(): Promise<void>;
}

let consoleFiltered = false;
/** oidc-provider prints harmless warnings (in-memory adapter, devInteractions, SSRF guard, pre-parsed body...) */
function filterOidcProviderConsole(): void {
  if (consoleFiltered || process.env.GATEHOUSE_TEST_IDP_VERBOSE) return;
  consoleFiltered = true;
  const isProviderNoise = (args: unknown[]) =>
    typeof args[0] === 'string' && /^(\x1b\[[0-9;]*m)?oidc-provider (WARNING|NOTICE): /.test(args[0]);
  for (const method of ['warn', 'info'] as const) {
    const original = console[method].bind(console);
    console[method] = (...args: unknown[]) => {
      if (!isProviderNoise(args)) original(...args);
    };
  }
}

function readRawBody(req: http.IncomingMessage): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.once('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.once('error', reject);
  });
}

/**
 * Reads a POST's form body on arrival, so the wrappers below see its parameters before oidc-provider does.
 * oidc-provider's body parser then uses req.body (its documented fallback for an already-parsed body) instead
 * of the consumed stream.
 */
async function preParseForm(req: http.IncomingMessage): Promise<URLSearchParams> {
  const raw = await readRawBody(req);
  (req as http.IncomingMessage & { body?: string }).body = raw;
  return new URLSearchParams(raw);
}

function clientAuthOf(authorization: string, form: URLSearchParams): ClientAuthUsed {
  if (/^basic\s/i.test(authorization)) return 'client_secret_basic';
  if (form.has('client_assertion')) return 'private_key_jwt_or_client_secret_jwt';
  if (form.has('client_secret')) return 'client_secret_post';
  return 'none';
}

/** `{...defaults, ...overrides}` without the keys whose value is `undefined` (how callers remove a default) */
function mergeDefined(defaults: Record<string, unknown>, overrides: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries({ ...defaults, ...overrides })) if (v !== undefined) out[k] = v;
  return out;
}

function toArray(v: string | string[] | undefined): string[] {
  if (v === undefined) return [];
  return Array.isArray(v) ? v : [v];
}

const TOKEN_PATH = '/token';
const REVOCATION_PATH = '/token/revocation';

type Middleware = (ctx: KoaContextWithOIDC, next: () => Promise<unknown>) => Promise<void>;

/** The options every part needs, with their defaults applied. */
interface IdpSettings {
  clientId: string;
  clientSecret: string;
  accessTokenTtl: number;
}

/** The IdP's signing key, as oidc-provider gets it (a private JWK) and as signLogoutToken signs with it. */
interface SigningKey {
  jwk: JWK & { kid: string };
  key: Awaited<ReturnType<typeof importJWK>>;
}

/**
 * What the IdP records and its fault switches: written by the endpoint wrappers and the provider's events,
 * read and set through the TestIdp controls.
 */
interface IdpState {
  readonly grants: GrantCounters;
  refreshSucceeded: number;
  refreshFailed: number;
  revocations: number;
  reuseDetected: number;
  grantErrors: Array<{ grantType: string; error: string; detail?: string }>;
  backchannelLogouts: BackchannelLogoutRecord[];
  reuseReports: ReuseReportRecord[];
  reuseWebhook: ReuseWebhook | undefined;
  /** reuse reports not answered yet */
  readonly deliveries: Set<Promise<void>>;
  tokenRequests: TokenRequestRecord[];
  revocationRequests: RevocationRecord[];
  refreshFault: RefreshFault | undefined;
  revocationFault: { status: number; body: object; remaining: number } | undefined;
  delayMs: number;
  delayPhase: 'before' | 'after';
  /** every access, refresh and ID token the token endpoint answered with (tokensIssued) */
  readonly issued: string[];
  /** grant ids by account, for revoke(sub) */
  readonly grantsByAccount: Map<string, Set<string>>;
  /** the account of the next programmatic login (setNextAccount) */
  nextAccount: string;
}

function newState(opts: TestIdpOptions): IdpState {
  return {
    grants: { authorization_code: 0, refresh_token: 0 },
    refreshSucceeded: 0,
    refreshFailed: 0,
    revocations: 0,
    reuseDetected: 0,
    grantErrors: [],
    backchannelLogouts: [],
    reuseReports: [],
    reuseWebhook: opts.reuseWebhook,
    deliveries: new Set(),
    tokenRequests: [],
    revocationRequests: [],
    refreshFault: undefined,
    revocationFault: undefined,
    delayMs: 0,
    delayPhase: 'before',
    issued: [],
    grantsByAccount: new Map(),
    nextAccount: opts.account ?? 'alice',
  };
}

export async function startTestIdp(opts: TestIdpOptions = {}): Promise<TestIdp> {
  if (opts.quiet !== false) filterOidcProviderConsole();
  const settings: IdpSettings = {
    clientId: opts.clientId ?? DEFAULT_CLIENT_ID,
    clientSecret: opts.clientSecret ?? DEFAULT_CLIENT_SECRET,
    accessTokenTtl: opts.accessTokenTtl ?? 2,
  };
  const { server, issuer } = await listen(opts);
  const signingKey = await generateSigningKey();
  const state = newState(opts);

  const provider = new Provider(issuer, buildConfiguration(opts, settings, signingKey));
  recordProviderEvents(provider, state, issuer);
  // provider.use middleware runs before oidc-provider's own routes
  provider.use(recordRevocationRequests(state));
  provider.use(recordTokenRequests(state));
  if (opts.interactions !== 'dev') provider.use(finishInteractions(provider, state));

  const handle = provider.callback();
  server.on('request', (req, res) => void handle(req, res));
  return controls({ provider, server, issuer, settings, signingKey, state });
}

// ---------- server start ----------

async function listen(opts: TestIdpOptions): Promise<{ server: http.Server; issuer: string }> {
  const server = http.createServer();
  const hostname = opts.hostname ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // Loopback only, also for 'localhost' (browsers and Node's fetch try 127.0.0.1 when ::1 refuses).
    server.listen(opts.port ?? 0, '127.0.0.1', resolve);
  });
  return { server, issuer: `http://${hostname}:${(server.address() as AddressInfo).port}` };
}

async function generateSigningKey(): Promise<SigningKey> {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = { ...(await exportJWK(privateKey)), kid: `test-rs256-${randomBytes(4).toString('hex')}`, alg: 'RS256', use: 'sig' };
  // the same private key oidc-provider signs with (it gets `jwks`), for signLogoutToken
  return { jwk, key: await importJWK(jwk, 'RS256') };
}

// ---------- configuration ----------

function buildConfiguration(opts: TestIdpOptions, settings: IdpSettings, signingKey: SigningKey): Configuration {
  const { accessTokenTtl } = settings;
  const claimsOf = opts.claims ?? ((sub: string) => ({ sub, email: `${sub}@example.test`, email_verified: true, name: `Test ${sub}` }));
  return {
    clients: [mainClient(opts, settings), ...((opts.extraClients ?? []) as ClientMetadata[])],
    clockTolerance: opts.clockTolerance ?? 0,
    jwks: { keys: [signingKey.jwk] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    routes: { token: TOKEN_PATH, revocation: REVOCATION_PATH },
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: opts.interactions === 'dev' },
      revocation: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      backchannelLogout: { enabled: true },
      userinfo: { enabled: true },
      // the gateway's own tokens (routes with token: client)
      clientCredentials: { enabled: true },
      ...(opts.resources && { resourceIndicators: resourceIndicators(opts.resources, accessTokenTtl) }),
      ...(opts.dpopNonce && { dPoP: { enabled: true, nonceSecret: randomBytes(32), requireNonce: () => true } }),
      pushedAuthorizationRequests: {
        enabled: opts.pushedAuthorizationRequests !== 'none',
        requirePushedAuthorizationRequests: opts.pushedAuthorizationRequests === 'required',
      },
    },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
    conformIdTokenClaims: false,
    findAccount: async (_ctx, sub) => ({
      accountId: sub,
      claims: async () => ({ ...claimsOf(sub), sub }),
    }),
    ...(opts.skipConsent && { loadExistingGrant: firstPartyGrant(settings.clientId) }),
    // the default needs scope offline_access, which oidc-provider drops unless prompt=consent
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    // oidc-provider 9 blocks its own outgoing fetches (back-channel logout) to loopback: drop the SSRF dispatcher
    fetch: (input, init) => {
      const { dispatcher: _ssrfGuard, ...rest } = (init ?? {}) as RequestInit & { dispatcher?: unknown };
      return globalThis.fetch(input, rest);
    },
    rotateRefreshToken: true,
    ttl: {
      AccessToken: accessTokenTtl,
      AuthorizationCode: 60,
      IdToken: 3600,
      RefreshToken: opts.refreshTokenTtl ?? 3600,
      Interaction: 600,
      Session: 3600,
      Grant: 3600,
    },
  };
}

function mainClient(opts: TestIdpOptions, { clientId, clientSecret }: IdpSettings): ClientMetadata {
  return {
    client_id: clientId,
    client_secret: clientSecret,
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
    response_types: ['code'],
    // oidc-provider rejects a client without redirect_uris: register a placeholder until real ones are added
    redirect_uris: toArray(opts.redirectUri).length ? toArray(opts.redirectUri) : [PLACEHOLDER_REDIRECT_URI],
    post_logout_redirect_uris: toArray(opts.postLogoutRedirectUri),
    token_endpoint_auth_method: opts.tokenEndpointAuthMethod ?? 'client_secret_basic',
    // ID tokens carry auth_time, as Keycloak's, Auth0's and Entra's do (OIDC Core §2)
    require_auth_time: true,
    ...(opts.backchannelLogoutUri ? { backchannel_logout_uri: opts.backchannelLogoutUri, backchannel_logout_session_required: true } : {}),
  };
}

/** RFC 8707 resource indicators for TestIdpOptions.resources: a JWT access token per API, `aud` = the API */
function resourceIndicators(resources: string[], accessTokenTtl: number): NonNullable<Configuration['features']>['resourceIndicators'] {
  return {
    enabled: true,
    defaultResource: () => undefined,
    // a token request without `resource` gets the login's token (userinfo), not one for an API
    useGrantedResource: () => false,
    getResourceServerInfo: (_ctx: unknown, resource: string) => {
      if (!resources.includes(resource)) throw new errors.InvalidTarget();
      return {
        scope: 'api:read api:write',
        audience: resource,
        accessTokenTTL: accessTokenTtl,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      };
    },
  };
}

/** oidc-provider's documented hook for first-party clients: the grant it would otherwise ask consent for. */
function firstPartyGrant(clientId: string) {
  return async (ctx: KoaContextWithOIDC) => {
    const { client, session, result } = ctx.oidc;
    const grantId = (result?.consent as { grantId?: string } | undefined)?.grantId ?? session?.grantIdFor(client!.clientId);
    const existing = grantId ? await ctx.oidc.provider.Grant.find(grantId) : undefined;
    if (existing || client?.clientId !== clientId || !session?.accountId) return existing;
    const grant = new ctx.oidc.provider.Grant({ clientId, accountId: session.accountId });
    grant.addOIDCScope([...ctx.oidc.requestParamOIDCScopes].join(' '));
    if (ctx.oidc.requestParamClaims.size) grant.addOIDCClaims([...ctx.oidc.requestParamClaims]);
    await grant.save();
    return grant;
  };
}

// ---------- recording: the provider's events ----------

function recordProviderEvents(provider: Provider, state: IdpState, issuer: string): void {
  const trackGrant = (accountId: string | undefined, grantId: string | undefined) => {
    if (!accountId || !grantId) return;
    let set = state.grantsByAccount.get(accountId);
    if (!set) state.grantsByAccount.set(accountId, (set = new Set()));
    set.add(grantId);
  };
  provider.on('grant.saved', (grant) => trackGrant(grant.accountId, grant.jti));
  provider.on('authorization_code.saved', (code) => trackGrant(code.accountId, code.grantId));
  provider.on('refresh_token.saved', (rt) => trackGrant(rt.accountId, rt.grantId));

  provider.on('grant.error', (ctx, err) => {
    const grantType = String((ctx.oidc?.params?.grant_type as string | undefined) ?? '');
    const detail = (err as { error_detail?: string }).error_detail;
    state.grantErrors.push({ grantType, error: err.error ?? err.message, ...(detail !== undefined ? { detail } : {}) });
  });
  // oidc-provider's reuse detection (lib/actions/grants/refresh_token.js): a consumed refresh token presented
  // again destroys it and revokes its grant, the only grant revocation a refresh_token grant makes. RFC 9700
  // §4.14.2: the IdP then tells whoever holds the grant's sessions, here through the reuse webhook.
  provider.on('grant.revoked', (ctx) => {
    const rt = ctx.oidc.entities.RefreshToken;
    if (ctx.oidc.route !== 'token' || ctx.oidc.params?.grant_type !== 'refresh_token' || !rt?.consumed || !rt.accountId) return;
    state.reuseDetected++;
    if (state.reuseWebhook) reportReuse(state, state.reuseWebhook, { sub: rt.accountId, ...(rt.sid ? { sid: rt.sid } : {}), iss: issuer });
  });
  provider.on('backchannel.success', (_ctx, client, accountId, sid) => {
    state.backchannelLogouts.push({ ok: true, clientId: client.clientId, accountId, sid });
  });
  provider.on('backchannel.error', (_ctx, err, client, accountId, sid) => {
    state.backchannelLogouts.push({ ok: false, clientId: client.clientId, accountId, sid, error: err.message });
  });
}

/** Out of band, like an IdP's event hook: the token endpoint's answer never waits for the delivery. */
function reportReuse(state: IdpState, hook: ReuseWebhook, body: ReuseReportRecord['body']): void {
  const record: ReuseReportRecord = { body };
  state.reuseReports.push(record);
  const delivery = globalThis
    .fetch(hook.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${hook.token}` },
      body: JSON.stringify(body),
    })
    .then(
      async (res) => {
        record.status = res.status;
        await res.body?.cancel();
      },
      (err: unknown) => {
        record.error = err instanceof Error ? err.message : String(err);
      },
    )
    .finally(() => state.deliveries.delete(delivery));
  state.deliveries.add(delivery);
}

// ---------- recording: the revocation and token endpoints ----------

/** Records each revocation-endpoint POST (revocationRequests) and answers it itself while failRevocation is set. */
function recordRevocationRequests(state: IdpState): Middleware {
  return async (ctx, next) => {
    if (ctx.method !== 'POST' || ctx.path !== REVOCATION_PATH) {
      await next();
      return;
    }
    state.revocations++;
    const form = await preParseForm(ctx.req);
    const hint = form.get('token_type_hint');
    const record: RevocationRecord = {
      token: form.get('token') ?? '',
      ...(hint !== null ? { tokenTypeHint: hint } : {}),
      clientAuth: clientAuthOf(ctx.get('authorization'), form),
      injected: false,
    };
    state.revocationRequests.push(record);
    const fault = state.revocationFault;
    if (fault && fault.remaining > 0) {
      fault.remaining--;
      if (fault.remaining <= 0) state.revocationFault = undefined;
      record.injected = true;
      record.status = fault.status;
      ctx.status = fault.status;
      ctx.set('Cache-Control', 'no-store');
      ctx.body = fault.body;
      return;
    }
    await next();
    record.status = ctx.status;
  };
}

/**
 * Counts and records each token-endpoint POST on arrival (grants, tokenRequests), applies delay() and
 * failRefresh(), then counts the refresh outcome and keeps the tokens issued.
 */
function recordTokenRequests(state: IdpState): Middleware {
  return async (ctx, next) => {
    if (ctx.method !== 'POST' || ctx.path !== TOKEN_PATH) {
      await next();
      return;
    }
    const form = await preParseForm(ctx.req);
    const grantType = form.get('grant_type') ?? '';
    state.grants[grantType] = (state.grants[grantType] ?? 0) + 1;
    const record: TokenRequestRecord = {
      grantType,
      clientAuth: clientAuthOf(ctx.get('authorization'), form),
      ...(grantType === 'refresh_token' ? { refreshToken: form.get('refresh_token') ?? '' } : {}),
      ...(form.has('resource') && { resource: form.get('resource')! }),
      dpop: ctx.get('dpop') !== '',
      injected: false,
    };
    state.tokenRequests.push(record);

    if (state.delayMs > 0 && state.delayPhase === 'before') await sleep(state.delayMs);

    const fault = state.refreshFault;
    if (grantType === 'refresh_token' && fault && fault.remaining > 0) {
      fault.remaining--;
      if (fault.remaining <= 0) state.refreshFault = undefined;
      state.refreshFailed++;
      record.injected = true;
      record.status = fault.status;
      ctx.status = fault.status;
      ctx.set('Cache-Control', 'no-store');
      for (const [k, v] of Object.entries(fault.headers)) ctx.set(k, v);
      ctx.body = fault.body;
      return;
    }

    await next();

    if (state.delayMs > 0 && state.delayPhase === 'after') await sleep(state.delayMs);

    const ok = ctx.status === 200;
    record.status = ctx.status;
    if (grantType === 'refresh_token') {
      if (ok) state.refreshSucceeded++;
      else state.refreshFailed++;
    }
    const body: unknown = ctx.body;
    if (ok && body && typeof body === 'object' && !Buffer.isBuffer(body)) {
      const b = body as Record<string, unknown>;
      for (const key of ['access_token', 'refresh_token', 'id_token']) {
        const v = b[key];
        if (typeof v === 'string') state.issued.push(v);
      }
    }
  };
}

// ---------- accounts and interactions ----------

/**
 * Programmatic interactions ('auto'): a GET of /interaction/:uid signs in state.nextAccount (or the request's
 * X-Test-Account) and grants every scope and claim asked for, then redirects back to the authorization endpoint.
 */
function finishInteractions(provider: Provider, state: IdpState): Middleware {
  return async (ctx, next) => {
    if (ctx.method !== 'GET' || !/^\/interaction\/[^/]+$/.test(ctx.path)) {
      await next();
      return;
    }
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    const { prompt, params, session } = details;
    let result: Record<string, unknown>;
    if (prompt.name === 'login') {
      // X-Test-Account (sent by loginAs) makes concurrent logins of different users race-free
      result = { login: { accountId: ctx.get('x-test-account') || state.nextAccount } };
    } else if (prompt.name === 'consent') {
      const existing = details.grantId ? await provider.Grant.find(details.grantId) : undefined;
      const grant = existing ?? new provider.Grant({ accountId: session!.accountId, clientId: params.client_id as string });
      const d = prompt.details as {
        missingOIDCScope?: string[];
        missingOIDCClaims?: string[];
        missingResourceScopes?: Record<string, string[]>;
      };
      if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
      for (const [resource, scopes] of Object.entries(d.missingResourceScopes ?? {})) grant.addResourceScope(resource, scopes.join(' '));
      if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
      result = { consent: { grantId: await grant.save() } };
    } else {
      throw new Error(`test IdP: unexpected prompt ${prompt.name}`);
    }
    const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
    ctx.status = 303;
    ctx.redirect(returnTo);
  };
}

/** revoke(sub): every grant of the account, with its access and refresh tokens and codes */
async function revokeAccount(provider: Provider, state: IdpState, sub: string): Promise<number> {
  const ids = [...(state.grantsByAccount.get(sub) ?? [])];
  for (const grantId of ids) {
    await Promise.all([
      provider.AccessToken.revokeByGrantId(grantId),
      provider.RefreshToken.revokeByGrantId(grantId),
      provider.AuthorizationCode.revokeByGrantId(grantId),
      provider.Grant.adapter.destroy(grantId),
    ]);
  }
  state.grantsByAccount.delete(sub);
  return ids.length;
}

/** static clients are cached as Client instances by oidc-provider: adding to their URI lists takes effect at once */
async function addClientUris(
  provider: Provider,
  id: string,
  uris: { redirectUri?: string | string[]; postLogoutRedirectUri?: string | string[] },
): Promise<void> {
  const client = await provider.Client.find(id);
  if (!client) throw new Error(`test IdP: no client ${id}`);
  const c = client as unknown as { redirectUris: string[]; postLogoutRedirectUris?: string[] };
  for (const r of toArray(uris.redirectUri)) if (!c.redirectUris.includes(r)) c.redirectUris.push(r);
  const post = (c.postLogoutRedirectUris ??= []);
  for (const r of toArray(uris.postLogoutRedirectUri)) if (!post.includes(r)) post.push(r);
}

async function signLogoutToken(
  issuer: string,
  clientId: string,
  signingKey: SigningKey,
  claims: Record<string, unknown> = {},
  header: Record<string, unknown> = {},
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const payload = mergeDefined(
    {
      iss: issuer,
      aud: clientId,
      iat: now,
      exp: now + 120,
      jti: randomBytes(16).toString('base64url'),
      events: { [BACKCHANNEL_LOGOUT_EVENT]: {} },
    },
    claims,
  );
  const protectedHeader = mergeDefined({ alg: 'RS256', kid: signingKey.jwk.kid, typ: 'logout+jwt' }, header);
  if (protectedHeader.alg !== 'RS256') throw new Error('test IdP: signLogoutToken signs with RS256 only (use jose for other keys)');
  return new CompactSign(new TextEncoder().encode(JSON.stringify(payload)))
    .setProtectedHeader(protectedHeader as CompactJWSHeaderParameters)
    .sign(signingKey.key);
}

// ---------- controls ----------

function controls(parts: {
  provider: Provider;
  server: http.Server;
  issuer: string;
  settings: IdpSettings;
  signingKey: SigningKey;
  state: IdpState;
}): TestIdp {
  const { provider, server, issuer, signingKey, state } = parts;
  const { clientId, clientSecret, accessTokenTtl } = parts.settings;
  return {
    issuer,
    provider,
    clientId,
    clientSecret,
    tokenEndpoint: `${issuer}${TOKEN_PATH}`,
    accessTokenTtl,
    // the gateway counts a token's life from when it received it, never longer than the IdP's TTL
    waitForAccessTokenExpiry: () => sleep(accessTokenTtl * 1000 + 500),
    setNextAccount: (sub) => {
      state.nextAccount = sub;
    },
    grants: state.grants,
    get refreshSucceeded() {
      return state.refreshSucceeded;
    },
    get refreshFailed() {
      return state.refreshFailed;
    },
    get revocations() {
      return state.revocations;
    },
    get reuseDetected() {
      return state.reuseDetected;
    },
    get grantErrors() {
      return state.grantErrors;
    },
    get tokenRequests() {
      return state.tokenRequests;
    },
    get revocationRequests() {
      return state.revocationRequests;
    },
    get backchannelLogouts() {
      return state.backchannelLogouts;
    },
    get reuseReports() {
      return state.reuseReports;
    },
    reportReuseTo: (hook) => {
      state.reuseWebhook = hook ?? undefined;
    },
    reuseReportsDelivered: async () => {
      while (state.deliveries.size > 0) await Promise.all([...state.deliveries]);
      return state.reuseReports;
    },
    resetCounters: () => {
      for (const k of Object.keys(state.grants)) state.grants[k] = 0;
      state.refreshSucceeded = 0;
      state.refreshFailed = 0;
      state.revocations = 0;
      state.reuseDetected = 0;
      state.grantErrors = [];
      state.backchannelLogouts = [];
      state.reuseReports = [];
      state.tokenRequests = [];
      state.revocationRequests = [];
    },
    failRefresh: (status, body, o) => {
      if (status === null) {
        state.refreshFault = undefined;
        return;
      }
      const defaultBody =
        status === 400 ? { error: 'invalid_grant' } : { error: 'temporarily_unavailable', error_description: 'injected by the test IdP' };
      state.refreshFault = {
        status,
        body: body ?? defaultBody,
        headers: o?.headers ?? {},
        remaining: o?.times ?? Infinity,
      };
    },
    failRevocation: (status, body, o) => {
      if (status === null) {
        state.revocationFault = undefined;
        return;
      }
      const defaultBody =
        status >= 500 ? { error: 'temporarily_unavailable', error_description: 'injected by the test IdP' } : { error: 'invalid_request' };
      state.revocationFault = { status, body: body ?? defaultBody, remaining: o?.times ?? Infinity };
    },
    delay: (ms, phase = 'before') => {
      state.delayMs = ms;
      state.delayPhase = phase;
    },
    addClientUris: (uris, id = clientId) => addClientUris(provider, id, uris),
    allowGateway: (publicUrl, id = clientId) =>
      addClientUris(provider, id, { redirectUri: `${publicUrl}/auth/callback`, postLogoutRedirectUri: `${publicUrl}/` }),
    revoke: (sub) => revokeAccount(provider, state, sub),
    tokensIssued: () => [...state.issued],
    signLogoutToken: (claims, header) => signLogoutToken(issuer, clientId, signingKey, claims, header),
    close: async () => {
      await Promise.all([...state.deliveries]);
      return new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
    },
  };
}
