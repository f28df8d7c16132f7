/**
 * Strict outbound request control (OAuth 2.0 for Browser-Based Applications §6.1.3.6): `/api/<p>` may only ever reach
 * `<UPSTREAM>/<p>`. A path is refused when any segment could climb out of the base or change the host
 * once decoded by the upstream: `.`/`..` (raw or percent-encoded), an encoded `/` or `\`, a raw `\`,
 * an empty segment (`//`), a leading `@`, or a control character. The query passes through unchanged.
 */
const CONTROL = /[\u0000-\u001f\u007f]/;

/**
 * A segment that is `.` or `..` once its matrix parameters are cut (`..;/admin` is `..` to Tomcat, Jetty,
 * Spring), or that hides a `/` or `\`.
 */
function climbs(segment: string): boolean {
  const bare = segment.split(';')[0]!;
  return bare === '.' || bare === '..' || /[/\\]/.test(segment);
}

/**
 * A path of letters, digits, `-`, `_` and single `/`s, no segment starting with `.` or `@`: nothing in it can
 * decode to anything else, so no segment needs the checks below (most API paths: the hot path).
 */
const PLAIN_PATH = /^\/api(?:\/[A-Za-z0-9_~-][A-Za-z0-9_.~-]*)*\/?$/;

/** The upstream-relative path and query of a raw `/api...` request target, or undefined when it is refused. */
export function upstreamPath(rawUrl: string): string | undefined {
  // RFC 9112 §3.2: a request target never carries a fragment; a raw '#' is malformed.
  if (rawUrl.includes('#')) return undefined;
  const q = rawUrl.indexOf('?');
  const path = q < 0 ? rawUrl : rawUrl.slice(0, q);
  const query = q < 0 ? '' : rawUrl.slice(q);
  if (path !== '/api' && !path.startsWith('/api/')) return undefined;
  const rest = path.slice(4) || '/';
  if (PLAIN_PATH.test(path)) return CONTROL.test(query) ? undefined : rest + query;
  const segments = rest.split('/').slice(1);
  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i]!;
    if (seg === '') {
      if (i === segments.length - 1) continue; // a trailing slash
      return undefined;
    }
    if (seg.includes('\\')) return undefined;
    let decoded: string;
    try {
      decoded = decodeURIComponent(seg);
    } catch {
      return undefined;
    }
    if (climbs(decoded) || CONTROL.test(decoded)) return undefined;
    // Double encoding (`%252e%252e`, `%252f`): an upstream that decodes once more must not see a climb either.
    let twice: string;
    try {
      twice = decodeURIComponent(decoded);
    } catch {
      twice = decoded;
    }
    if (climbs(twice)) return undefined;
    if (i === 0 && decoded.startsWith('@')) return undefined;
  }
  if (CONTROL.test(query)) return undefined;
  return rest + query;
}
