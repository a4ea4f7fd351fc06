//! The canonical bundle of a multi-file model (an embedding encoder: weights, tokenizer,
//! config), so that one sha256 names it exactly as one sha256 names an ONNX file or a GGUF.
//!
//! ```text
//! bundle   = "VERINET-BUNDLE-1\n" manifest "\n" file bytes, in manifest order
//! manifest = {"files":[{"name":..,"sha256":"<hex>","size":N},...]}  (names sorted, compact JSON)
//! ```
//! The model id is the sha256 of the whole bundle. Building a bundle from the same files
//! always gives the same bytes (sorted names, no timestamps), so anyone can rebuild it from
//! the three files and check the id, and the manifest names every file's own sha256.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{LlmError, Result};

/// First line of every bundle.
pub const BUNDLE_MAGIC: &[u8] = b"VERINET-BUNDLE-1\n";
const MAX_FILES: usize = 16;
const MAX_MANIFEST: usize = 64 << 10;

/// One file of a bundle, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleEntry {
    /// File name (no directories).
    pub name: String,
    /// Lowercase hex sha256 of its bytes.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    files: Vec<BundleEntry>,
}

/// A parsed bundle: the manifest and each file's bytes (borrowed from the bundle).
#[derive(Debug)]
pub struct Bundle<'a> {
    /// The files, in manifest (name) order.
    pub files: Vec<(BundleEntry, &'a [u8])>,
}

impl<'a> Bundle<'a> {
    /// Whether `bytes` start like a bundle.
    pub fn is_bundle(bytes: &[u8]) -> bool {
        bytes.starts_with(BUNDLE_MAGIC)
    }

    /// Builds the canonical bundle of `files` (name, bytes); names must be unique plain names.
    pub fn build(files: &[(&str, &[u8])]) -> Result<Vec<u8>> {
        let mut sorted: Vec<_> = files.to_vec();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        let mut entries = Vec::with_capacity(sorted.len());
        for (name, bytes) in &sorted {
            check_name(name)?;
            entries.push(BundleEntry { name: (*name).to_owned(), sha256: hex_sha256(bytes), size: bytes.len() as u64 });
        }
        if entries.windows(2).any(|w| w[0].name == w[1].name) {
            return Err(LlmError::InvalidModel("a bundle names each file once".into()));
        }
        let manifest = serde_json::to_vec(&Manifest { files: entries }).map_err(|e| LlmError::InvalidModel(e.to_string()))?;
        let mut out = Vec::with_capacity(BUNDLE_MAGIC.len() + manifest.len() + 1 + sorted.iter().map(|f| f.1.len()).sum::<usize>());
        out.extend_from_slice(BUNDLE_MAGIC);
        out.extend_from_slice(&manifest);
        out.push(b'\n');
        for (_, bytes) in &sorted {
            out.extend_from_slice(bytes);
        }
        Ok(out)
    }

    /// Parses and checks a bundle: canonical manifest, every file present with its size and
    /// sha256, nothing after the last file.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let bad = |m: String| LlmError::InvalidModel(format!("bundle: {m}"));
        let rest = bytes.strip_prefix(BUNDLE_MAGIC).ok_or_else(|| bad("does not start with VERINET-BUNDLE-1".into()))?;
        let end = rest.iter().take(MAX_MANIFEST).position(|&b| b == b'\n').ok_or_else(|| bad("no manifest line".into()))?;
        let manifest: Manifest = serde_json::from_slice(&rest[..end]).map_err(|e| bad(format!("manifest: {e}")))?;
        if manifest.files.is_empty() || manifest.files.len() > MAX_FILES {
            return Err(bad(format!("1 to {MAX_FILES} files, got {}", manifest.files.len())));
        }
        let canonical = serde_json::to_vec(&manifest).map_err(|e| bad(e.to_string()))?;
        if canonical != rest[..end] || manifest.files.windows(2).any(|w| w[0].name >= w[1].name) {
            return Err(bad("the manifest is not canonical (compact JSON, names sorted and unique)".into()));
        }
        let mut at = &rest[end + 1..];
        let mut files = Vec::with_capacity(manifest.files.len());
        for entry in manifest.files {
            check_name(&entry.name)?;
            let size = usize::try_from(entry.size).map_err(|_| bad("file too large".into()))?;
            if at.len() < size {
                return Err(bad(format!("{} is truncated: {} of {} bytes", entry.name, at.len(), size)));
            }
            let (file, tail) = at.split_at(size);
            let got = hex_sha256(file);
            if got != entry.sha256 {
                return Err(bad(format!("{} hashes to {got}, the manifest says {}", entry.name, entry.sha256)));
            }
            files.push((entry, file));
            at = tail;
        }
        if !at.is_empty() {
            return Err(bad(format!("{} bytes after the last file", at.len())));
        }
        Ok(Self { files })
    }

    /// The bytes of the file called `name`.
    pub fn file(&self, name: &str) -> Option<&'a [u8]> {
        self.files.iter().find(|(e, _)| e.name == name).map(|(_, b)| *b)
    }
}

/// Files of a sentence-encoder folder that go into its bundle (others are left out).
pub const ENCODER_FILES: &[&str] = &["config.json", "model.safetensors", "sentence_bert_config.json", "tokenizer.json"];

/// The bundle of an encoder shipped as a zip (a sentence-transformers folder, zipped): the
/// [`ENCODER_FILES`] found in it, wherever they sit in the zip.
pub fn bundle_from_zip(zip: &[u8]) -> Result<Vec<u8>> {
    use std::io::Read;
    let bad = |m: String| LlmError::InvalidModel(format!("zip: {m}"));
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).map_err(|e| bad(e.to_string()))?;
    // The shallowest copy of each file wins: sentence-transformers folders also hold module
    // configs such as `1_Pooling/config.json`.
    let mut picks: Vec<(String, usize, usize)> = Vec::new();
    for i in 0..archive.len() {
        let f = archive.by_index(i).map_err(|e| bad(e.to_string()))?;
        let path = f.name().trim_start_matches("./");
        let depth = path.matches('/').count();
        let name = path.rsplit('/').next().unwrap_or_default().to_owned();
        if !ENCODER_FILES.contains(&name.as_str()) {
            continue;
        }
        match picks.iter_mut().find(|p| p.0 == name) {
            Some(p) if depth < p.1 => *p = (name, depth, i),
            Some(_) => {}
            None => picks.push((name, depth, i)),
        }
    }
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, _, i) in picks {
        let mut f = archive.by_index(i).map_err(|e| bad(e.to_string()))?;
        let mut buf = Vec::with_capacity(f.size().min(1 << 30) as usize);
        f.read_to_end(&mut buf).map_err(|e| bad(e.to_string()))?;
        files.push((name, buf));
    }
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    Bundle::build(&refs)
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !name.starts_with('.');
    if ok { Ok(()) } else { Err(LlmError::InvalidModel(format!("bundle: bad file name {name:?}"))) }
}

fn hex_sha256(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_canonically_and_refuses_tampering() {
        let a = Bundle::build(&[("b.json", b"{}"), ("a.bin", b"xyz")]).unwrap();
        let b = Bundle::build(&[("a.bin", b"xyz"), ("b.json", b"{}")]).unwrap();
        assert_eq!(a, b, "order of the inputs does not matter");
        let parsed = Bundle::parse(&a).unwrap();
        assert_eq!(parsed.file("a.bin"), Some(&b"xyz"[..]));
        assert_eq!(parsed.files[0].0.name, "a.bin");

        let mut flipped = a.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(Bundle::parse(&flipped).unwrap_err().to_string().contains("hashes to"));
        assert!(Bundle::parse(&a[..a.len() - 1]).unwrap_err().to_string().contains("truncated"));
        let mut longer = a.clone();
        longer.push(0);
        assert!(Bundle::parse(&longer).unwrap_err().to_string().contains("after the last file"));
        assert!(Bundle::build(&[("../x", b"1")]).is_err());
        assert!(Bundle::build(&[("x", b"1"), ("x", b"2")]).is_err());
    }
}
