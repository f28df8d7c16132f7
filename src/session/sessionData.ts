/** What the express-session blob holds: identity and lifetimes. Tokens live in the vault, never here. */

export interface GatehouseSession {
  /** IdP issuer and subject, and the IdP session id (for back-channel logout). */
  iss: string;
  sub: string;
  sid?: string;
  /** The user's identity claims (ID token + userinfo, protocol claims removed). */
  user: Record<string, unknown>;
  /** Epoch milliseconds. */
  createdAt: number;
  absoluteExpiresAt: number;
  /** Last recorded activity; the idle window slides from here, written in steps (not on every request). */
  activeAt: number;
  /** When the user authenticated at the IdP (unix seconds, the IdP's clock: the ID token's `auth_time`), if it says. */
  authAt?: number;
  /**
   * Index of the configured secret this session's records are keyed under (absent = the first). Set when
   * the session is found under an older secret after a rotation; it travels with the session.
   */
  secretIndex?: number;
}

declare module 'express-session' {
  interface SessionData {
    gatehouse?: GatehouseSession;
  }
}
