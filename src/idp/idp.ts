/**
 * The only code that imports openid-client. Discovery is retried in the background until it succeeds
 * (so a gateway started while the IdP is down becomes ready by itself); every call has a timeout.
 *
 * Things openid-client does NOT do for us, done here or by callers:
 * - token-endpoint ID-token signatures are unchecked by default → enableNonRepudiationChecks (OIDC Core §3.1.3.7);
 * - `redirect_uri` is derived from the URL passed in → callers pass the configured public origin (never a Host header);
 * - refreshed ID tokens are not compared with the original → tokens/refresh.ts (OIDC Core §12.2).
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { createPrivateKey } from 'node:crypto';
import * as oidc from 'openid-client';
import { createRemoteJWKSet, type JWTVerifyGetKey } from 'jose';
import type { Config } from '../config/schema';
import type { Logger } from '../log/logger';
import { GatewayError } from '../http/errors';
import { ConfigError } from '../config/loadConfig';
import type { Audience } from '../api/routes';
import type { DpopKey } from '../tokens/dpop';

type Par = Config['par'];

/** RFC 9126 §5: `pushed_authorization_request_endpoint` offers them, `require_pushed_authorization_requests` demands them. */
function usePar(mode: Par, meta: oidc.ServerMetadata): boolean {
  return mode !== 'off' && typeof meta.pushed_authorization_request_endpoint === 'string';
}

/**
 * RFC 9449: a token request with a proof of `key` (openid-client signs it, and answers an IdP's
 * use_dpop_nonce by asking once more with its nonce).
 */
function proofs(config: oidc.Configuration, key: DpopKey | undefined): oidc.DPoPOptions | undefined {
  return key ? { DPoP: oidc.getDPoPHandle(config, key.pair) } : undefined;
}

/** The settings the IdP's metadata makes impossible, as configuration problems, one line each. */
export function metadataProblems(cfg: Pick<Config, 'par' | 'dpop' | 'settingNames' | 'routes'>, meta: oidc.ServerMetadata): string[] {
  const env = cfg.settingNames === 'env';
  const par = env ? 'GATEHOUSE_PAR' : 'par';
  const problems: string[] = [];
  if (cfg.par === 'required' && typeof meta.pushed_authorization_request_endpoint !== 'string')
    problems.push(`${par}: required, but the IdP offers no pushed authorization request endpoint — set it to auto or off`);
  if (cfg.par === 'off' && meta.require_pushed_authorization_requests === true)
    problems.push(`${par}: off, but the IdP requires pushed authorization requests — set it to auto or required`);
  // RFC 8414 §2: grant_types_supported, when given, lists every grant the IdP accepts.
  const grants = meta.grant_types_supported;
  const client = cfg.routes.filter((r) => r.token === 'client').map((r) => r.path);
  if (client.length && Array.isArray(grants) && !grants.includes('client_credentials'))
    problems.push(
      `${env ? 'GATEHOUSE_ROUTES' : 'routes'}: ${client.join(', ')} use token "client", but the IdP does not offer the client_credentials grant — enable it there or change the route`,
    );
  // RFC 9449 §5.1: an IdP that binds tokens to DPoP keys lists the proof algorithms it accepts.
  const algs = meta.dpop_signing_alg_values_supported;
  if (cfg.dpop && !(Array.isArray(algs) && algs.includes('ES256')))
    problems.push(
      `${env ? 'GATEHOUSE_DPOP' : 'dpop'}: true, but the IdP does not accept DPoP proofs signed with ES256 — enable DPoP there or set it to false`,
    );
  return problems;
}

export interface TokenSet {
  accessToken: string;
  refreshToken: string | undefined;
  idToken: string | undefined;
  /** Seconds, as sent by the IdP (RFC 6749 §5.1); undefined when the IdP sent none. */
  expiresIn: number | undefined;
  /** `Bearer`, or `DPoP` for a token bound to the proof's key (RFC 9449 §5). */
  tokenType?: string;
  claims: Record<string, unknown> | undefined;
}

/** OIDC Core §3.1.2.1 `prompt` values a login may ask for. */
export type Prompt = 'none' | 'login' | 'select_account';

export interface LoginChecks {
  codeVerifier: string;
  state: string;
  nonce: string;
}

/** An ID token openid-client accepted but Gatehouse refuses (the checks below). */
export class IdTokenRejected extends Error {
  override readonly name = 'IdTokenRejected';
}

const MAX_IAT_SKEW_S = 30;
const MAX_IAT_AGE_S = 600;

/**
 * OIDC Core §3.1.3.7 checks openid-client leaves open for token-endpoint ID tokens:
 * step 3, no audience but ours (Gatehouse trusts no other); step 5, `azp` when present is our client id;
 * step 10, `iat` neither in the future nor (at login) older than a fresh login allows.
 */
export function checkIdTokenClaims(claims: Record<string, unknown>, clientId: string, nowS: number, fresh: boolean): void {
  if (claims.azp !== undefined && claims.azp !== clientId) throw new IdTokenRejected('azp is not this client');
  if (Array.isArray(claims.aud) && claims.aud.some((a) => a !== clientId)) throw new IdTokenRejected('untrusted extra audience');
  const iat = claims.iat;
  if (typeof iat !== 'number' || iat > nowS + MAX_IAT_SKEW_S) throw new IdTokenRejected('iat in the future');
  if (fresh && iat < nowS - MAX_IAT_AGE_S) throw new IdTokenRejected('iat too old for a fresh login');
}

/**
 * A refresh response the IdP answered with a new refresh token, but that failed validation (openid-client:
 * ID-token signature or claims, missing access_token, ...). RFC 6749 §6: the old refresh token is
 * superseded all the same and must never be sent again, so the new one travels with the error.
 */
export class RefreshResponseRejected extends Error {
  override readonly name = 'RefreshResponseRejected';
  constructor(
    readonly rotatedRefreshToken: string,
    cause: unknown,
  ) {
    super('refresh response rejected after the refresh token was rotated', { cause });
  }
}

/** The refresh token a token-endpoint response carried, seen before openid-client validates the rest. */
const rotation = new AsyncLocalStorage<{ refreshToken?: string }>();

async function fetchNotingRotation(url: string, options: oidc.CustomFetchOptions): Promise<Response> {
  const res = await fetch(url, options);
  const seen = rotation.getStore();
  if (seen && res.ok) {
    try {
      const body = (await res.clone().json()) as { refresh_token?: unknown };
      if (typeof body.refresh_token === 'string') seen.refreshToken = body.refresh_token;
    } catch {
      // not JSON: openid-client rejects it, and there is no refresh token to keep
    }
  }
  return res;
}

/**
 * RFC 6749 §5.1: `expires_in` is the token's lifetime as the IdP sent it; the vault counts it from when the
 * grant was sent. Not openid-client's expiresIn() helper: it answers the remaining WHOLE seconds, so a 1 s
 * token read one millisecond later has 0 left, which reads as "no lifetime given" (five minutes).
 */
export function toTokenSet(r: oidc.TokenEndpointResponse & oidc.TokenEndpointResponseHelpers): TokenSet {
  return {
    accessToken: r.access_token,
    refreshToken: r.refresh_token,
    idToken: r.id_token,
    expiresIn: typeof r.expires_in === 'number' ? r.expires_in : undefined,
    tokenType: r.token_type,
    claims: r.claims(),
  };
}

export class Idp {
  private config: oidc.Configuration | undefined;
  private discovering: Promise<oidc.Configuration> | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private jwks: JWTVerifyGetKey | undefined;
  private closed = false;
  private misconfigured: ConfigError | undefined;
  /** The resources routes ask tokens for (RFC 8707), each once. */
  private readonly resources: readonly string[];

  constructor(
    private readonly cfg: Config,
    private readonly log: Logger,
    /** The gateway's clock, for the ID-token checks of our own (openid-client keeps its own for the rest). */
    private readonly now: () => number = Date.now,
  ) {
    this.resources = [...new Set(cfg.routes.flatMap((r) => (r.audience?.resource ? [r.audience.resource] : [])))];
  }

  /**
   * Starts discovery; resolves when metadata is loaded or the first attempt failed (then retries in the
   * background). Rejects with a ConfigError when the IdP's metadata contradicts the configuration.
   */
  async start(): Promise<void> {
    await this.metadata().catch(() => undefined);
    if (this.misconfigured) throw this.misconfigured;
  }

  /**
   * The issuer identifier as the IdP states it (what ID tokens carry in `iss`), without waiting for the IdP:
   * the configured one until discovery has run (the kill switch must work while the IdP is down).
   */
  issuerId(): string {
    return this.config?.serverMetadata().issuer ?? this.cfg.issuerId;
  }

  /**
   * What verifies a back-channel logout token (OIDC Back-Channel Logout 1.0 §2.6 step 3): the IdP's JWKS only (jose caches it
   * and refetches at most once per cooldown for an unknown kid), and the IdP's advertised ID-token algorithms
   * without `none` or HMAC (default RS256).
   */
  async logoutTokenVerification(): Promise<{ issuer: string; keys: JWTVerifyGetKey; algorithms: string[] }> {
    const meta = (await this.metadata()).serverMetadata();
    if (!meta.jwks_uri) throw new GatewayError('invalid_request', 400);
    this.jwks ??= createRemoteJWKSet(new URL(meta.jwks_uri), { timeoutDuration: this.cfg.idpTimeoutSeconds * 1000 });
    const advertised = (meta.id_token_signing_alg_values_supported ?? ['RS256']).filter((a) => a !== 'none' && !a.startsWith('HS'));
    return { issuer: meta.issuer, keys: this.jwks, algorithms: advertised.length ? advertised : ['RS256'] };
  }

  ready(): boolean {
    return this.config !== undefined;
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retryTimer);
  }

  private async clientAuth(): Promise<oidc.ClientAuth> {
    switch (this.cfg.clientAuth) {
      case 'client_secret_post':
        return oidc.ClientSecretPost(this.cfg.clientSecret);
      case 'private_key_jwt': {
        const key = createPrivateKey(this.cfg.clientPrivateKeyPem!);
        const alg =
          key.asymmetricKeyType === 'ec' ? { name: 'ECDSA', namedCurve: 'P-256' } : { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
        const cryptoKey = await crypto.subtle.importKey('pkcs8', key.export({ format: 'der', type: 'pkcs8' }), alg, false, ['sign']);
        return oidc.PrivateKeyJwt(cryptoKey);
      }
      default:
        return oidc.ClientSecretBasic(this.cfg.clientSecret);
    }
  }

  /** IdP metadata; rejects with 503 identity_provider_unavailable while discovery has not succeeded. */
  async metadata(): Promise<oidc.Configuration> {
    if (this.config) return this.config;
    this.discovering ??= this.discover().finally(() => (this.discovering = undefined));
    return this.discovering;
  }

  private async discover(): Promise<oidc.Configuration> {
    try {
      const options: oidc.DiscoveryRequestOptions = { timeout: this.cfg.idpTimeoutSeconds };
      // http:// issuers are accepted only on loopback hosts (config/loadConfig.ts), for the demo and tests.
      if (this.cfg.allowInsecureIdp) options.execute = [oidc.allowInsecureRequests];
      const config = await oidc.discovery(this.cfg.issuer, this.cfg.clientId, undefined, await this.clientAuth(), options);
      config.timeout = this.cfg.idpTimeoutSeconds;
      config[oidc.customFetch] = fetchNotingRotation;
      oidc.enableNonRepudiationChecks(config); // OIDC Core §3.1.3.7: verify ID-token signatures with the IdP's JWKS
      const problems = metadataProblems(this.cfg, config.serverMetadata());
      if (problems.length) {
        // Not the IdP being down: retrying cannot help, and logins would fail one by one.
        this.misconfigured = new ConfigError(problems);
        for (const problem of problems) this.log.error({ issuer: this.cfg.issuer.href }, problem);
        throw this.misconfigured;
      }
      this.config = config;
      this.log.info({ issuer: this.cfg.issuer.href }, 'identity provider metadata loaded');
      return config;
    } catch (err) {
      if (err === this.misconfigured)
        throw new GatewayError('identity_provider_unavailable', 503, { cause: err, headers: { 'Retry-After': '5' } });
      this.log.warn({ err, issuer: this.cfg.issuer.href }, 'identity provider discovery failed; retrying');
      if (!this.closed) {
        clearTimeout(this.retryTimer);
        this.retryTimer = setTimeout(() => void this.metadata().catch(() => undefined), 5000).unref();
      }
      throw new GatewayError('identity_provider_unavailable', 503, { cause: err, headers: { 'Retry-After': '5' } });
    }
  }

  /**
   * Where the browser goes to log in. With pushed authorization requests (RFC 9126) the parameters go to
   * the IdP by back channel, authenticated as the client, and the URL carries only `client_id` and the
   * `request_uri` the IdP returned: nothing in the browser's address bar or history, nothing a browser
   * extension can alter.
   */
  async authorizationUrl(checks: LoginChecks, prompt?: Prompt): Promise<URL> {
    const config = await this.metadata();
    const params = new URLSearchParams({
      ...(prompt && { prompt }),
      redirect_uri: this.cfg.redirectUri,
      scope: this.cfg.scopes,
      code_challenge: await oidc.calculatePKCECodeChallenge(checks.codeVerifier),
      code_challenge_method: 'S256',
      state: checks.state,
      nonce: checks.nonce,
    });
    // RFC 8707 §2.1: the login names every API a route asks a token for; a refresh may then ask for each
    // (an IdP that does not know one refuses the login here, not a call later).
    for (const resource of this.resources) params.append('resource', resource);
    if (!usePar(this.cfg.par, config.serverMetadata())) return oidc.buildAuthorizationUrl(config, params);
    try {
      return await oidc.buildAuthorizationUrlWithPAR(config, params);
    } catch (err) {
      if (err instanceof oidc.ResponseBodyError && err.error === 'invalid_target') {
        this.refusedResources();
        throw new GatewayError('login_failed', 400, { cause: err });
      }
      this.log.warn({ err }, 'pushed authorization request failed');
      throw new GatewayError('identity_provider_unavailable', 503, { cause: err, headers: { 'Retry-After': '5' } });
    }
  }

  /** The callback's checks: state, iss (RFC 9207), code exchange with PKCE (RFC 7636), ID token with nonce (OIDC Core §3.1.3.7). */
  async codeGrant(callbackUrl: URL, checks: LoginChecks, dpop?: DpopKey): Promise<TokenSet> {
    const config = await this.metadata();
    const tokens = toTokenSet(
      await oidc.authorizationCodeGrant(
        config,
        callbackUrl,
        {
          pkceCodeVerifier: checks.codeVerifier,
          expectedState: checks.state,
          expectedNonce: checks.nonce,
          idTokenExpected: true,
        },
        undefined,
        proofs(config, dpop),
      ),
    );
    checkIdTokenClaims(tokens.claims ?? {}, this.cfg.clientId, Math.floor(this.now() / 1000), true);
    return tokens;
  }

  /**
   * The refresh grant. Throws RefreshResponseRejected when the IdP rotated the refresh token but the rest
   * of its answer was invalid. A refreshed ID token that fails Gatehouse's own checks is dropped (the
   * previous one is kept for id_token_hint): the access and refresh tokens are still good.
   */
  async refresh(refreshToken: string, audience?: Audience, dpop?: DpopKey): Promise<TokenSet> {
    const config = await this.metadata();
    const seen: { refreshToken?: string } = {};
    // RFC 8707 §2.2 / RFC 6749 §6: a token for one API, with the same refresh token.
    const params = new URLSearchParams();
    if (audience?.resource) params.set('resource', audience.resource);
    if (audience?.scope) params.set('scope', audience.scope);
    let tokens: TokenSet;
    try {
      tokens = toTokenSet(await rotation.run(seen, () => oidc.refreshTokenGrant(config, refreshToken, params, proofs(config, dpop))));
    } catch (err) {
      if (seen.refreshToken !== undefined && seen.refreshToken !== refreshToken) throw new RefreshResponseRejected(seen.refreshToken, err);
      throw err;
    }
    if (tokens.claims) {
      try {
        checkIdTokenClaims(tokens.claims, this.cfg.clientId, Math.floor(this.now() / 1000), false);
      } catch (err) {
        this.log.warn({ err }, 'refreshed ID token refused; keeping the previous one');
        return { ...tokens, idToken: undefined, claims: undefined };
      }
    }
    return tokens;
  }

  /** RFC 6749 §4.4: the gateway's own token, for an API audience (RFC 8707 resource, scope). */
  async clientCredentials(audience: Audience, dpop?: DpopKey): Promise<TokenSet> {
    const config = await this.metadata();
    const params = new URLSearchParams();
    if (audience.resource) params.set('resource', audience.resource);
    if (audience.scope) params.set('scope', audience.scope);
    return toTokenSet(await oidc.clientCredentialsGrant(config, params, proofs(config, dpop)));
  }

  /** OIDC Core §5.3, with the login's access token (and, for a DPoP-bound one, a proof of its key). */
  async userinfo(tokens: Pick<TokenSet, 'accessToken' | 'tokenType'>, sub: string, dpop?: DpopKey): Promise<Record<string, unknown>> {
    const config = await this.metadata();
    if (!config.serverMetadata().userinfo_endpoint) return {};
    const bound = tokens.tokenType?.toLowerCase() === 'dpop';
    return await oidc.fetchUserInfo(config, tokens.accessToken, sub, bound ? proofs(config, dpop) : undefined);
  }

  /** The IdP refused a resource the login named (RFC 8707 invalid_target): says which routes name which. */
  refusedResources(): void {
    const named = this.cfg.routes.flatMap((r) => (r.audience?.resource ? [`${r.path} → ${r.audience.resource}`] : []));
    this.log.error(
      { error: 'invalid_target', routes: named },
      `the IdP refused a resource the routes name (${named.join(', ')}): register it at the IdP or fix the route`,
    );
  }

  /** RFC 7009 §2.1. Resolves false when the IdP offers no revocation endpoint. */
  async revoke(refreshToken: string): Promise<boolean> {
    const config = await this.metadata();
    if (!config.serverMetadata().revocation_endpoint) return false;
    await oidc.tokenRevocation(config, refreshToken, { token_type_hint: 'refresh_token' });
    return true;
  }

  /** OIDC RP-Initiated Logout §2: null when the IdP has no end_session_endpoint (or metadata is not loaded). */
  endSessionUrl(idTokenHint: string | undefined, state: string): string | null {
    if (!this.config?.serverMetadata().end_session_endpoint) return null;
    const params: Record<string, string> = {
      client_id: this.cfg.clientId,
      post_logout_redirect_uri: this.cfg.postLogoutRedirectUri,
      state,
    };
    if (idTokenHint) params.id_token_hint = idTokenHint;
    return oidc.buildEndSessionUrl(this.config, params).href;
  }
}
