/**
 * Jest config: @swc/jest, CommonJS output. swc only transpiles: `npm run typecheck` checks the types.
 * ESM-only dependencies (openid-client, jose, oidc-provider) are loaded through
 * Jest 30's native require(esm): needs Node >= 24.9 AND NODE_OPTIONS=--experimental-vm-modules
 * (set by `npm test`). Use the global `jest`, not `import { jest } from '@jest/globals'` (jest.mock hoisting).
 *
 * globalSetup/globalTeardown are TypeScript; Jest runs them through the same `transform` below.
 * globalSetup exports REDIS_URL (an external Redis from REDIS_URL/GATEHOUSE_REDIS_URL, or a private
 * redis-server it spawns from PATH), which the test workers inherit.
 */
const swc = [
  '@swc/jest',
  {
    jsc: { parser: { syntax: 'typescript' }, target: 'es2023' },
    module: { type: 'commonjs' },
  },
];

module.exports = {
  testEnvironment: 'node',
  testMatch: ['<rootDir>/test/**/*.test.ts'],
  transform: { '^.+\\.ts$': swc },
  // The package's own names, as users import them (README's testing example runs as is), from the sources.
  moduleNameMapper: {
    '^gatehouse-bff$': '<rootDir>/src/index.ts',
    '^gatehouse-bff/testing$': '<rootDir>/src/testing/index.ts',
  },
  globalSetup: '<rootDir>/test/support/globalSetup.ts',
  globalTeardown: '<rootDir>/test/support/globalTeardown.ts',
  maxWorkers: 2,
  testTimeout: 30000,
};
