// Checks verinet inclusion proofs with the real @openzeppelin/merkle-tree (what on-chain
// consumers and MerkleProof.sol agree with). Used by crates/node/tests/it/receipts.rs.
//
// Usage: VERINET_NODE_MODULES=target/npm/node_modules node scripts/oz_verify_proof.mjs <proofs.json>
//
// <proofs.json> is an array of `GET /v1/receipts/{id}/proof` bodies. Prints one JSON array of
// {"request_id", "verified": StandardMerkleTree.verify(batch.root, leaf_encoding, [digest], proof),
//  "leaf_matches": leafHash equals the body's leaf}.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const PACKAGE = '@openzeppelin/merkle-tree';
function fail(message) {
  process.stderr.write(`oz_verify_proof.mjs: ${message}\n`);
  process.exit(2);
}
const [file] = process.argv.slice(2);
if (!file) fail('usage: node scripts/oz_verify_proof.mjs <proofs.json>');
const modules = process.env.VERINET_NODE_MODULES;
if (!modules) fail('VERINET_NODE_MODULES is not set: run scripts/test.sh, which installs ' + PACKAGE);
const require = createRequire(join(modules, 'noop.js'));
let oz;
try {
  const entry = require.resolve(PACKAGE, { paths: [modules] });
  if (!entry.startsWith(modules)) fail(`${PACKAGE} resolved outside ${modules}: ${entry}`);
  oz = require(entry);
} catch (err) {
  fail(`${PACKAGE} not found in ${modules} (${err.message}): run scripts/test.sh`);
}
const { StandardMerkleTree } = oz;

const proofs = JSON.parse(readFileSync(file, 'utf8'));
const out = proofs.map((p) => ({
  request_id: p.request_id,
  verified: StandardMerkleTree.verify(p.batch.root, p.leaf_encoding, [p.digest], p.proof),
  leaf_matches: StandardMerkleTree.of([[p.digest]], p.leaf_encoding).leafHash([p.digest]) === p.leaf,
}));
process.stdout.write(JSON.stringify(out) + '\n');
