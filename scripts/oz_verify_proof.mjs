// Checks verinet inclusion proofs with the real @openzeppelin/merkle-tree (what on-chain
// consumers and MerkleProof.sol agree with). Used by crates/node/tests/it/receipts.rs.
//
// Usage: VERINET_NODE_MODULES=target/npm/node_modules node scripts/oz_verify_proof.mjs <proofs.json>
//
// <proofs.json> is an array of `GET /v1/receipts/{id}/proof` bodies. Prints one JSON array of
// {"request_id", "verified": StandardMerkleTree.verify(batch.root, leaf_encoding, [digest], proof),
//  "leaf_matches": leafHash equals the body's leaf}.
import { readFileSync } from 'node:fs';
import { fail, loadOz } from './oz_load.mjs';

const [file] = process.argv.slice(2);
if (!file) fail('oz_verify_proof.mjs', 'usage: node scripts/oz_verify_proof.mjs <proofs.json>');
const { StandardMerkleTree } = loadOz('oz_verify_proof.mjs').oz;

const proofs = JSON.parse(readFileSync(file, 'utf8'));
const out = proofs.map((p) => ({
  request_id: p.request_id,
  verified: StandardMerkleTree.verify(p.batch.root, p.leaf_encoding, [p.digest], p.proof),
  leaf_matches: StandardMerkleTree.of([[p.digest]], p.leaf_encoding).leafHash([p.digest]) === p.leaf,
}));
process.stdout.write(JSON.stringify(out) + '\n');
