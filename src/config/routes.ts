/**
 * The route table's settings: the config file's `routes` array, or GATEHOUSE_ROUTES holding the same JSON.
 */

/** One route as an embedder or the config file gives it. */
export interface RouteOptions {
  /** A path prefix under /api (`/api`, `/api/orders`), matched at segment boundaries; the longest wins. */
  path: string;
  /** Absolute http(s) URL with an optional base path: `<path>/x?y` → `<upstream>/x?y`. */
  upstream: string;
  /** user (default): a session is required and its access token sent; optional: sent when there is a session; none: no session, no token. */
  token?: 'user' | 'optional' | 'none' | 'client';
  /** Allowed methods (default: all but TRACE and CONNECT). */
  methods?: string[];
  /** Time to the upstream's response headers, then 504 upstream_timeout (default GATEHOUSE_UPSTREAM_TIMEOUT_SECONDS). */
  timeoutSeconds?: number;
  /** Let the upstream's Set-Cookie reach the browser (never for Gatehouse's own cookie names). Default false. */
  allowSetCookie?: boolean;
  /** WebSocket upgrades allowed on this route. Default false. */
  websocket?: boolean;
  /** An access token of its own, for this resource (RFC 8707: an absolute URI), obtained with the session's refresh token. */
  resource?: string;
  /** An access token of its own, with these scopes (space-separated, among the login's scopes). */
  scope?: string;
}
