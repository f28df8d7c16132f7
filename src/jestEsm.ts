/**
 * Loaded first by the package's entry points (index.ts, testing/index.ts). Gatehouse's OpenID client
 * (openid-client, jose) and the test kit's IdP (oidc-provider) are ES modules only. Node loads them from
 * CommonJS by itself (require(esm)), but Jest runs CommonJS tests in its own module system, which loads an
 * ES module only on Node >= 24.9 started with --experimental-vm-modules. Without both, Jest fails on
 * the first such import with "Must use import to load ES Module" and a hint that names only the Node
 * version. This says what to change, before anything else is loaded.
 */
import vm from 'node:vm';

/**
 * Jest passes `jest` to every module it loads, as a parameter of its module wrapper; elsewhere (Node, a process
 * a test started, other test runners) no such name exists. JEST_WORKER_ID would also be seen by those processes.
 */
declare const jest: unknown;

if (typeof jest !== 'undefined') {
  const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
  const nodeOk = major > 24 || (major === 24 && minor >= 9);
  // vm.SourceTextModule exists only when Node runs with --experimental-vm-modules.
  const vmModules = typeof (vm as { SourceTextModule?: unknown }).SourceTextModule === 'function';
  if (!nodeOk || !vmModules) {
    const missing = [
      ...(nodeOk ? [] : [`Node >= 24.9 (this is ${process.version})`]),
      ...(vmModules ? [] : ['NODE_OPTIONS=--experimental-vm-modules (unset here)']),
    ];
    throw new Error(
      `gatehouse-bff under Jest needs ${missing.join(' and ')}: its dependencies openid-client, jose and ` +
        'oidc-provider are ES modules only, and Jest loads ES modules only so. Run Jest as ' +
        "NODE_OPTIONS='--experimental-vm-modules --disable-warning=ExperimentalWarning' jest " +
        '(the settings are in the package docs, docs/testing.md).',
    );
  }
}
