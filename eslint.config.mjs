// ESLint flat config. ESLint looks for bugs; Prettier owns formatting (no stylistic rules here).
// TypeScript files get typescript-eslint's type-aware `recommendedTypeChecked` set, which catches the
// bugs that matter in a gateway: floating promises, promises passed where a callback is expected,
// awaiting non-thenables, `any` leaking out of JSON.parse into headers. Plain JS config files get
// the syntax-only sets, because they are not part of any tsconfig project.
import js from '@eslint/js';
import { defineConfig, globalIgnores } from 'eslint/config';
import tseslint from 'typescript-eslint';

const nodeCommonJsGlobals = {
  module: 'writable',
  exports: 'writable',
  require: 'readonly',
  __dirname: 'readonly',
  __filename: 'readonly',
  process: 'readonly',
  console: 'readonly',
};

export default defineConfig(
  globalIgnores(['dist/', 'node_modules/', 'coverage/', 'bench/results/', 'test-results/']),

  js.configs.recommended,

  {
    files: ['**/*.ts', '**/*.mts', '**/*.cts'],
    extends: [tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      parserOptions: {
        // Uses the nearest tsconfig.json (src, test and scripts are all in it).
        projectService: true,
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        {
          args: 'all',
          argsIgnorePattern: '^_',
          varsIgnorePattern: '^_',
          caughtErrors: 'all',
          caughtErrorsIgnorePattern: '^_',
          destructuredArrayIgnorePattern: '^_',
          ignoreRestSiblings: true,
        },
      ],
      // A dropped promise is a request that never answers or an unhandled rejection that kills the process.
      '@typescript-eslint/no-floating-promises': 'error',
      // An async function where a void callback is expected (event emitters, timers, server.close) drops its
      // rejection. Express 5 handlers are typed to return `unknown`, so async middleware is not flagged.
      '@typescript-eslint/no-misused-promises': 'error',
      // Off: an async method without `await` is how an in-memory store satisfies a Promise-returning interface,
      // and `async` turns a synchronous throw into a rejection, which is the behaviour callers expect.
      '@typescript-eslint/require-await': 'off',
      // Same defaults as only-throw-error: passing on a caught `unknown` is fine, rejecting with a string is not.
      // (A truthiness-narrowed callback `err` is typed `{}` and still flagged: reject it as an Error.)
      '@typescript-eslint/prefer-promise-reject-errors': ['error', { allowThrowingUnknown: true, allowThrowingAny: true }],
      // Off: a gateway rejects control characters (NUL, CR/LF) in paths and redirects on purpose.
      'no-control-regex': 'off',
    },
  },

  {
    files: ['**/*.js', '**/*.cjs'],
    languageOptions: { sourceType: 'commonjs', globals: nodeCommonJsGlobals },
  },
  {
    files: ['**/*.mjs'],
    languageOptions: { sourceType: 'module', globals: { process: 'readonly', console: 'readonly' } },
  },
);
