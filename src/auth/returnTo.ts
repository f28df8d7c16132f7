/**
 * No open redirect (RFC 9700 §4.11.1: clients MUST NOT expose open redirectors). Parse, don't validate: this is the
 * only producer of a ReturnTo, and the callback redirects to nothing else.
 */
export type ReturnTo = string & { readonly __brand: 'ReturnTo' };

export const HOME = '/' as ReturnTo;
/** Stored with every login transaction for up to ten minutes, by anyone who asks: kept short. */
const MAX_LENGTH = 512;
const FORBIDDEN = /[\u0000-\u001f\u007f\\]/;

/** A same-origin path (re-serialised pathname + search + hash), or undefined for anything else. */
export function parseReturnTo(raw: unknown, origin: string): ReturnTo | undefined {
  if (typeof raw !== 'string' || raw.length === 0 || raw.length > MAX_LENGTH) return undefined;
  // A relative path only: "//host", "/\host" and "\/host" are protocol-relative to browsers.
  if (!raw.startsWith('/') || raw.startsWith('//') || FORBIDDEN.test(raw)) return undefined;
  let url: URL;
  try {
    url = new URL(raw, origin);
  } catch {
    return undefined;
  }
  if (url.origin !== origin) return undefined;
  let decoded: string;
  try {
    decoded = decodeURIComponent(url.pathname);
  } catch {
    return undefined;
  }
  // Encoded forms that turn into another host or a header once decoded by some later hop.
  if (decoded.startsWith('//') || FORBIDDEN.test(decoded)) return undefined;
  const path = url.pathname + url.search + url.hash;
  // Re-serialising percent-encodes: the stored form is what must stay short.
  return path.length > MAX_LENGTH ? undefined : (path as ReturnTo);
}
