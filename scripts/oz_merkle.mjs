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
import { readFileSync } from 'node:fs';
import { fail, loadOz } from './oz_load.mjs';

const [file] = process.argv.slice(2);
if (!file) fail('oz_merkle.mjs', 'usage: node scripts/oz_merkle.mjs <cases.json>');
const { oz, version } = loadOz('oz_merkle.mjs');
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
