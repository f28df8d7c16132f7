/**
 * gatehouse-bff/client: the SPA side of the Gatehouse contract (the README's "The SPA contract"), in one small,
 * dependency-free ES module.
 *
 *   - every call carries `X-CSRF: 1` and `credentials: 'same-origin'`;
 *   - 401 `unauthenticated` / `session_expired` → the unauthenticated handler (default: navigate to
 *     `/auth/login?returnTo=<current path + search + hash>`);
 *   - 502 / 503 → retry with exponential backoff, never sooner than `Retry-After` (seconds or HTTP date),
 *     within `maxAttempts` and `maxDelayMs`;
 *   - a WebSocket (`openSocket`) closed with 1008 `session_ended`, or cut (1006) while `/auth/session` answers
 *     401 → the same unauthenticated handler.
 *
 * Which requests are retried: a retry sends the request again, so it must be safe to send twice and its
 * body must be sendable twice. The body must be replayable (none, a string, URLSearchParams, FormData, a
 * Blob, an ArrayBuffer or a view of one, or a Request, which is cloned before each attempt); a
 * ReadableStream body is never retried. Idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE) are then
 * retried on any 502/503. Others (POST, PATCH, ...) only when the answer is Gatehouse's own
 * `token_refresh_unavailable` or `session_store_unavailable`, which it sends before the request reaches
 * the upstream API; a 502/503 from the API (or a 502 `bad_gateway`, which may come after the API saw the
 * request) is returned as-is.
 *
 * The code reads browser globals (`fetch`, `location`, `WebSocket`) when called, never at import, and types them
 * structurally, so it also compiles and runs without the DOM library (server rendering, Node tests).
 *
 * Over 250 lines on purpose: half of it is the documented public types, and one file keeps the package a
 * single module with no imports (about 3 kB gzipped).
 */

/** The identity claims from the ID token (`sub`, `name`, `email`, ...). */
export interface GatehouseUser {
  sub: string;
  name?: string;
  email?: string;
  [claim: string]: unknown;
}

/** `GET /auth/session` of a live session. */
export interface GatehouseSession {
  authenticated: true;
  user: GatehouseUser;
  /** Unix seconds: the session's absolute end. */
  expiresAt: number;
  /** Unix seconds: when the session ends if idle. */
  idleExpiresAt: number;
  /** Unix seconds: the current access token's end (the next API call after it refreshes the token). */
  accessTokenExpiresAt?: number;
  /** How often the access token was refreshed since login. */
  refreshCount?: number;
}

/** What `fetch` takes as its first argument (the DOM's RequestInfo | URL). */
export type FetchInput = string | URL | Request;

/** Why the session is missing: no (or an expired) session, or the IdP ended the grant. */
export type UnauthenticatedReason = 'unauthenticated' | 'session_expired';

export interface RetryOptions {
  /** Attempts in all, the first included (default 4; 1 = never retry). */
  maxAttempts?: number;
  /** First backoff step in ms, doubled at each retry (default 500). */
  baseDelayMs?: number;
  /**
   * Longest wait before a retry in ms (default 8000). Backoff steps are capped at it; when the server's
   * `Retry-After` asks for longer, the response is returned instead (never retried early).
   */
  maxDelayMs?: number;
}

export interface GatehouseClientOptions {
  /** Prefix of Gatehouse's `/auth/*` routes when it is reached under a path, e.g. `/bff` (default ''). */
  basePath?: string;
  /**
   * Called when a call answers 401 `unauthenticated` or `session_expired` (the response is still returned to
   * the caller), and when a socket of `openSocket` finds the session over (see there). Default: navigate to the
   * login, coming back to the current page.
   */
  onUnauthenticated?: (reason: UnauthenticatedReason, response: Response) => void;
  retry?: RetryOptions;
  /** Where `logout()` goes when the IdP has no end-session URL (default '/'). */
  loggedOutPath?: string;
  /** The fetch to use (default: the global `fetch`, looked up at each call). */
  fetch?: (input: FetchInput, init?: RequestInit) => Promise<Response>;
  /** How to navigate (default: `location.assign`). */
  navigate?: (url: string) => void;
  /** Path + search + hash to come back to after login (default: from `location`). */
  currentPath?: () => string;
  /** Waits before a retry (default: setTimeout, cut short by the request's AbortSignal). For tests. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** Clock in epoch ms, for `Retry-After` dates (default: Date.now). For tests. */
  now?: () => number;
  /** The WebSocket class `openSocket` uses (default: the global `WebSocket`, looked up at each call). For tests. */
  WebSocket?: new (url: string, protocols?: string | string[]) => WebSocket;
}

/** What `openSocket` takes besides the path. */
export interface GatehouseSocketOptions {
  /** Sub-protocols asked for in the handshake (`Sec-WebSocket-Protocol`). */
  protocols?: string | string[];
  /** Each message from the server (`event.data`: a string, or binary data as the socket's `binaryType` says). */
  onMessage?: (event: MessageEvent) => void;
  /** The socket is open. */
  onOpen?: (event: Event) => void;
  /**
   * The socket closed. `sessionEnded` is true when the session is known to be over (the unauthenticated
   * handler has been called): do not open the socket again. Otherwise (the gateway going away, the session
   * alive, or the check impossible) opening it again after a pause is fine.
   */
  onClose?: (event: CloseEvent, sessionEnded: boolean) => void;
  /** This socket's unauthenticated handler (default: the client's `onUnauthenticated`). */
  onUnauthenticated?: (reason: UnauthenticatedReason, response: Response) => void;
}

export interface GatehouseClient {
  /** `fetch` with the SPA contract applied (see the module comment). */
  fetch(input: FetchInput, init?: RequestInit): Promise<Response>;
  /** The session, or null without one (401). Does not call the unauthenticated handler. Throws on other errors. */
  getSession(): Promise<GatehouseSession | null>;
  /** Ends the session, then navigates to the IdP's end-session URL or, without one, to `loggedOutPath`. */
  logout(): Promise<void>;
  /** The login URL that comes back to `returnTo` (default: the current page). */
  loginUrl(returnTo?: string): string;
  /** A silent login (`prompt=none`), unless this page is the answer of one that failed (see `trySilentLogin`). */
  trySilentLogin(returnTo?: string): boolean;
  /** A WebSocket to a same-origin path (`/api/...`), tied to the session (see the function `openSocket`). */
  openSocket(path: string, options?: GatehouseSocketOptions): WebSocket;
}

/** A Gatehouse answer the client could not turn into a result (getSession, logout). */
export class GatehouseError extends Error {
  constructor(
    readonly status: number,
    readonly code: string | undefined,
  ) {
    super(`Gatehouse answered ${status}${code ? ` ${code}` : ''}`);
    this.name = 'GatehouseError';
  }
}

interface BrowserLocation {
  href: string;
  pathname: string;
  search: string;
  hash: string;
  assign(url: string): void;
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE']);
/** Gatehouse's own 503s, answered before the request is forwarded (docs/routes.md, "What `/api` answers besides your API"). */
const NOT_FORWARDED = new Set(['token_refresh_unavailable', 'session_store_unavailable']);
/** The close Gatehouse sends on a WebSocket whose session ended (logout anywhere, revoked grant, idle or absolute end). */
const SESSION_ENDED = { code: 1008, reason: 'session_ended' };
/** A close without a close frame: the connection was cut (or the handshake refused), and nothing says why. */
const CLOSED_ABNORMALLY = 1006;

function browserLocation(): BrowserLocation {
  const loc = (globalThis as { location?: BrowserLocation }).location;
  if (!loc) throw new Error('gatehouse-bff/client: no `location` here; pass `navigate` and `currentPath`');
  return loc;
}

function isRequest(input: unknown): input is Request {
  return typeof Request !== 'undefined' && input instanceof Request;
}

function replayable(body: RequestInit['body']): boolean {
  return (
    body === undefined ||
    body === null ||
    typeof body === 'string' ||
    body instanceof URLSearchParams ||
    (typeof FormData !== 'undefined' && body instanceof FormData) ||
    (typeof Blob !== 'undefined' && body instanceof Blob) ||
    body instanceof ArrayBuffer ||
    ArrayBuffer.isView(body)
  );
}

/** RFC 9110 §10.2.3: delay-seconds or an HTTP-date; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | null, now: number): number | undefined {
  if (value === null) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  // HTTP dates start with a day name (IMF-fixdate, RFC 850, asctime); Date.parse alone takes "-1" for a year.
  const date = /^[A-Za-z]{3}/.test(v) ? Date.parse(v) : NaN;
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/** The `error` code of a JSON error body, without consuming the caller's response. */
async function errorCode(res: Response): Promise<string | undefined> {
  try {
    const body = (await res.clone().json()) as { error?: unknown } | null;
    return typeof body?.error === 'string' ? body.error : undefined;
  } catch {
    return undefined;
  }
}

/** The same-origin ws: or wss: URL of a path of this page's origin. */
function socketUrl(path: string): string {
  const page = new URL(browserLocation().href);
  const url = new URL(path, page);
  if (url.origin !== page.origin) throw new Error(`gatehouse-bff/client: openSocket takes a path of this page's origin, not ${url.origin}`);
  url.protocol = page.protocol === 'https:' ? 'wss:' : 'ws:';
  url.hash = '';
  return url.href;
}

/** What the unauthenticated handler gets for a socket closed with session_ended, which has no HTTP answer. */
function sessionEndedAnswer(): Response {
  const body = { error: 'unauthenticated', message: 'The session ended: Gatehouse closed the WebSocket (1008 session_ended).' };
  return new Response(JSON.stringify(body), { status: 401, headers: { 'Content-Type': 'application/json' } });
}

function defaultSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason as Error);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason as Error);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export function createGatehouseClient(options: GatehouseClientOptions = {}): GatehouseClient {
  const base = (options.basePath ?? '').replace(/\/+$/, '');
  const maxAttempts = Math.max(1, options.retry?.maxAttempts ?? 4);
  const baseDelayMs = options.retry?.baseDelayMs ?? 500;
  const maxDelayMs = options.retry?.maxDelayMs ?? 8000;
  const doFetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  const navigate = options.navigate ?? ((url: string) => browserLocation().assign(url));
  const currentPath =
    options.currentPath ??
    (() => {
      const loc = browserLocation();
      return loc.pathname + loc.search + loc.hash;
    });
  const sleep = options.sleep ?? defaultSleep;
  const now = options.now ?? Date.now;

  const loginUrl = (returnTo = currentPath()) => `${base}/auth/login?returnTo=${encodeURIComponent(returnTo)}`;
  const onUnauthenticated = options.onUnauthenticated ?? (() => navigate(loginUrl()));
  // The query parameter Gatehouse adds to returnTo when a silent login found no IdP session to use.
  const silentLoginFailed = (path: string) => new URL(path, 'http://page.invalid').searchParams.get('login') === 'none';

  /** The contract without the 401 handler; `idempotent` marks calls Gatehouse defines as such (logout). */
  async function send(input: FetchInput, init: RequestInit = {}, idempotent = false): Promise<Response> {
    const headers = new Headers(isRequest(input) ? input.headers : undefined);
    new Headers(init.headers).forEach((value, name) => headers.set(name, value));
    headers.set('X-CSRF', '1');
    const request: RequestInit = { ...init, headers, credentials: 'same-origin' };
    const method = (init.method ?? (isRequest(input) ? input.method : 'GET')).toUpperCase();
    // A Request input's own body is replayed by cloning; a body in `init` replaces it.
    const canReplay = replayable(init.body);

    for (let attempt = 1; ; attempt++) {
      // A Request's body can be read once: each attempt sends a copy.
      const res = await doFetch(isRequest(input) ? input.clone() : input, request);
      if ((res.status !== 502 && res.status !== 503) || attempt >= maxAttempts || !canReplay) return res;
      if (!idempotent && !IDEMPOTENT.has(method) && !NOT_FORWARDED.has((await errorCode(res)) ?? '')) return res;
      const asked = parseRetryAfter(res.headers.get('Retry-After'), now());
      if (asked !== undefined && asked > maxDelayMs) return res;
      const delay = Math.max(asked ?? 0, Math.min(baseDelayMs * 2 ** (attempt - 1), maxDelayMs));
      await res.body?.cancel().catch(() => undefined);
      await sleep(delay, init.signal ?? undefined);
    }
  }

  return {
    loginUrl,

    trySilentLogin(returnTo = currentPath()) {
      if (silentLoginFailed(currentPath())) return false;
      navigate(`${base}/auth/login?prompt=none&returnTo=${encodeURIComponent(returnTo)}`);
      return true;
    },

    async fetch(input, init) {
      const res = await send(input, init);
      if (res.status === 401) {
        const code = await errorCode(res);
        if (code === 'unauthenticated' || code === 'session_expired') onUnauthenticated(code, res);
      }
      return res;
    },

    async getSession() {
      const res = await send(`${base}/auth/session`);
      if (res.status === 401) return null;
      if (!res.ok) throw new GatehouseError(res.status, await errorCode(res));
      return (await res.json()) as GatehouseSession;
    },

    async logout() {
      // POST /auth/logout is idempotent (without a session it answers 200 too), so it is retried like a GET.
      const res = await send(`${base}/auth/logout`, { method: 'POST' }, true);
      if (!res.ok) throw new GatehouseError(res.status, await errorCode(res));
      const { logoutUrl } = (await res.json()) as { logoutUrl: string | null };
      navigate(logoutUrl ?? options.loggedOutPath ?? '/');
    },

    openSocket(path, o = {}) {
      const Socket = options.WebSocket ?? (globalThis as { WebSocket?: GatehouseClientOptions['WebSocket'] }).WebSocket;
      if (!Socket) throw new Error('gatehouse-bff/client: no `WebSocket` here; pass `WebSocket`');
      const unauthenticated = o.onUnauthenticated ?? onUnauthenticated;
      const ws = new Socket(socketUrl(path), o.protocols);
      if (o.onOpen) ws.addEventListener('open', o.onOpen);
      if (o.onMessage) ws.addEventListener('message', o.onMessage);
      // True when the session is over, after calling the handler.
      const sessionOver = async (event: CloseEvent): Promise<boolean> => {
        if (event.code === SESSION_ENDED.code && event.reason === SESSION_ENDED.reason) {
          unauthenticated('unauthenticated', sessionEndedAnswer());
          return true;
        }
        if (event.code !== CLOSED_ABNORMALLY) return false;
        // Cut, or a refused handshake (a browser shows neither's status): ask before anyone opens it again.
        let res: Response;
        try {
          res = await send(`${base}/auth/session`);
        } catch {
          return false; // offline: unknown; a new socket's handshake asks again
        }
        if (res.status !== 401) {
          await res.body?.cancel().catch(() => undefined);
          return false;
        }
        unauthenticated((await errorCode(res)) === 'session_expired' ? 'session_expired' : 'unauthenticated', res);
        return true;
      };
      ws.addEventListener('close', (event) => void sessionOver(event).then((ended) => o.onClose?.(event, ended)));
      return ws;
    },
  };
}

let defaultClient: GatehouseClient | undefined;
const client = () => (defaultClient ??= createGatehouseClient());

/** `fetch` for same-origin `/api/*` calls, with the default client (see createGatehouseClient). */
export function gatehouseFetch(input: FetchInput, init?: RequestInit): Promise<Response> {
  return client().fetch(input, init);
}

/** The session, or null when there is none. */
export function getSession(): Promise<GatehouseSession | null> {
  return client().getSession();
}

/** Ends the session here and at the IdP, then leaves the page. */
export function logout(): Promise<void> {
  return client().logout();
}

/**
 * Logs in without any screen when the user still has a session at the IdP (OIDC `prompt=none`): navigates to
 * `/auth/login?prompt=none`, which comes back to `returnTo` (default: this page) logged in; or, when the IdP
 * needs the user (to log in, consent or pick an account), comes back to it without a session and with
 * `login=none` added to its query. On such a page this returns false and does not navigate: show a login
 * button (`loginUrl()`) instead, so the page never loops. Returns true when it navigated.
 *
 *   if (!(await getSession()) && !trySilentLogin()) showLoginButton();
 */
export function trySilentLogin(returnTo?: string): boolean {
  return client().trySilentLogin(returnTo);
}

/**
 * Opens a WebSocket to `path` on this page's origin (`/api/live/feed` → `wss://<this host>/api/live/feed`), on
 * a Gatehouse route with `"websocket": true`; the browser sends the session cookie and Origin, Gatehouse adds
 * the bearer upstream. Returned as is (send, close, more listeners); the session is watched through its close:
 *
 *   - 1008 `session_ended` (the session ended anywhere: logout in any tab, the IdP, idle or absolute end) →
 *     the unauthenticated handler, at once, with a 401 `unauthenticated` Response made here (a socket has no
 *     HTTP answer);
 *   - 1006 (cut without a close frame, or the handshake refused: the browser tells neither why) →
 *     `GET /auth/session` (with `X-CSRF: 1`, retried on 502/503), and on 401 the unauthenticated handler;
 *   - then `onClose(event, sessionEnded)`. It never reconnects by itself: reconnect from `onClose` when
 *     `sessionEnded` is false (after a pause), so a dead session is never reconnected.
 *
 * Other closes (1001 the gateway going away, 1011 `session_unchecked`, 1009 `message_too_big`, the upstream's
 * own) leave the session as it is.
 */
export function openSocket(path: string, options?: GatehouseSocketOptions): WebSocket {
  return client().openSocket(path, options);
}
