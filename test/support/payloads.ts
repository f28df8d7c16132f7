/** Bad inputs shared by unit and end-to-end tests, so every layer is checked against the same list. */

/** returnTo values that must never lead off-origin (each one a known open-redirect trick). */
export const OPEN_REDIRECT_PAYLOADS: readonly string[] = [
  'https://evil.example',
  '//evil.example',
  '/\\evil.example',
  '\\/evil.example',
  '/%2F%2Fevil.example',
  'https:evil.example',
  'javascript:alert(1)',
  'data:text/html,x',
  '/%09/evil.example',
  'http://app.example@evil.example',
  '/x%0d%0aSet-Cookie:a=b',
  // the same, arriving decoded (a raw CR/LF, tab or backslash in the returnTo value itself)
  '/x\r\nSet-Cookie:a=b',
  '/\t/evil.example',
  '/%5Cevil.example',
  `/${'a'.repeat(10 * 1024)}`,
];

/** The required variables (docs/configuration.md): an empty environment names each of them once. */
export const REQUIRED_VARIABLES: readonly string[] = [
  'GATEHOUSE_ISSUER',
  'GATEHOUSE_CLIENT_ID',
  'GATEHOUSE_CLIENT_SECRET',
  'GATEHOUSE_PUBLIC_URL',
  'GATEHOUSE_UPSTREAM',
  'GATEHOUSE_SESSION_SECRET',
];
