// Reference side of crates/verify/tests/oz_merkle.rs: runs the real @openzeppelin/merkle-tree
// over the cases the Rust test wrote, so verinet's Merkle batches are checked against the library
// (and, through it, the MerkleProof.sol verifier) that on-chain consumers use.
//
// Usage: VERINET_NODE_MODULES=target/npm/node_modules node scripts/oz_merkle.mjs <cases.json>
//
// <cases.json> is an array of {values: [hex32...], dump: <Rust MerkleTree::dump()>,
// proofs: [[hex32...]...]} where proofs[i] is Rust's proof for values[i]. Prints one JSON array,
// one entry per case: OZ's own root, proofs and dump for the same values, whether OZ loaded the
// Rust dump, and whether StandardMerkleTree.verify accepted each Rust proof.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const PACKAGE = '@openzeppelin/merkle-tree';

function fail(message) {
  process.stderr.write(`oz_merkle.mjs: ${message}\n`);
  process.exit(2);
}

const [file] = process.argv.slice(2);
if (!file) fail('usage: node scripts/oz_merkle.mjs <cases.json>');
const modules = process.env.VERINET_NODE_MODULES;
if (!modules) fail('VERINET_NODE_MODULES is not set: run scripts/test.sh, which installs ' + PACKAGE);

// Resolve only from the pinned install: a global or stray copy of another version would make the
// cross-check compare against the wrong reference.
const require = createRequire(join(modules, 'noop.js'));
let oz;
let version;
try {
  const entry = require.resolve(PACKAGE, { paths: [modules] });
  if (!entry.startsWith(modules)) fail(`${PACKAGE} resolved outside ${modules}: ${entry}`);
  oz = require(entry);
  version = require(require.resolve(`${PACKAGE}/package.json`, { paths: [modules] })).version;
} catch (err) {
  fail(`${PACKAGE} not found in ${modules} (${err.message}): run scripts/test.sh`);
}
const { StandardMerkleTree } = oz;
const ENCODING = ['bytes32'];

// A load or verify that throws is a rejection, and the report must say which one and why
// rather than abort the whole run.
function attempt(f) {
  try {
    return { ok: f() };
  } catch (err) {
    return { ok: false, error: err.message };
  }
}

const cases = JSON.parse(readFileSync(file, 'utf8'));
const results = cases.map(({ values, dump, proofs }) => {
  const tree = StandardMerkleTree.of(values.map(v => [v]), ENCODING);
  const loaded = attempt(() => {
    const rust = StandardMerkleTree.load(dump);
    return rust.root === dump.tree[0];
  });
  return {
    root: tree.root,
    proofs: values.map(v => tree.getProof([v])),
    dump: tree.dump(),
    loaded,
    verified: values.map((v, i) => attempt(() => StandardMerkleTree.verify(dump.tree[0], ENCODING, [v], proofs[i]))),
  };
});
process.stdout.write(JSON.stringify({ version, results }) + '\n');
