/**
 * `gatehouse-bff/testing`: test your app's use of Gatehouse against real peers (docs/testing.md). Test-only: it
 * needs the optional peers oidc-provider and supertest, so nothing in the production entry points (src/index.ts,
 * src/main.ts) imports it.
 */
import '../jestEsm';
export {
  startTestIdp,
  type TestIdp,
  type TestIdpOptions,
  type GrantCounters,
  type RefreshFault,
  type TokenRequestRecord,
  type RevocationRecord,
  type BackchannelLogoutRecord,
  type ClientAuthUsed,
  type ReuseWebhook,
  type ReuseReportRecord,
} from './testIdp';
export { createTestGatehouse, type TestGatehouse, type TestGatehouseOptions } from './createTestGatehouse';
export { loginAs, type LoginOptions, type LoginResponse, type IdpFlowTrace } from './loginAs';
export { idpAgent, idpLogout, type Agent } from './idpBrowser';
export type { EchoResponse } from './echoUpstream';
export type { ReservedServer } from './testServer';
