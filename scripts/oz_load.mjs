// Loads @openzeppelin/merkle-tree from the pinned install in VERINET_NODE_MODULES only (a global
// or stray copy of another version would make the cross-checks compare against the wrong
// reference); exits 2 with a clear message otherwise. Shared by oz_merkle.mjs and
// oz_verify_proof.mjs.
import { createRequire } from 'node:module';
import { join } from 'node:path';

export const PACKAGE = '@openzeppelin/merkle-tree';

export function fail(script, message) {
  process.stderr.write(`${script}: ${message}\n`);
  process.exit(2);
}

export function loadOz(script) {
  const modules = process.env.VERINET_NODE_MODULES;
  if (!modules) fail(script, 'VERINET_NODE_MODULES is not set: run scripts/test.sh, which installs ' + PACKAGE);
  const require = createRequire(join(modules, 'noop.js'));
  try {
    const entry = require.resolve(PACKAGE, { paths: [modules] });
    if (!entry.startsWith(modules)) fail(script, `${PACKAGE} resolved outside ${modules}: ${entry}`);
    const version = require(require.resolve(`${PACKAGE}/package.json`, { paths: [modules] })).version;
    return { oz: require(entry), version };
  } catch (err) {
    fail(script, `${PACKAGE} not found in ${modules} (${err.message}): run scripts/test.sh`);
  }
}
