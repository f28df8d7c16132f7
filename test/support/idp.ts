/** The test IdP lives in src/testing (shared with `npm run demo`); re-exported here for the tests. */
export * from '../../src/testing/testIdp';
