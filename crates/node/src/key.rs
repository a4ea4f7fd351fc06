use std::path::Path;

use alloy_primitives::Address;
use alloy_signer_local::PrivateKeySigner;

use crate::{NodeError, Result};

/// A secp256k1 key kept as hex in a file only its owner can read: the node key, and the CLI's
/// wallet.
#[derive(Clone)]
pub struct KeyFile {
    signer: PrivateKeySigner,
}

impl KeyFile {
    /// Reads an existing key file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| key_err(path, e))?;
        let signer: PrivateKeySigner = text.trim().parse().map_err(|e| key_err(path, e))?;
        Ok(Self { signer })
    }

    /// Creates a fresh random key; refuses to overwrite an existing file.
    pub fn create(path: &Path) -> Result<Self> {
        let signer = PrivateKeySigner::random();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = format!("0x{}\n", alloy_primitives::hex::encode(signer.to_bytes()));
        write_private(path, &text).map_err(|e| key_err(path, e))?;
        Ok(Self { signer })
    }

    /// Loads the key at `path`, creating one on first use.
    pub fn load_or_create(path: &Path) -> Result<Self> {
        if path.exists() { Self::load(path) } else { Self::create(path) }
    }

    /// The key's address.
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// The signer.
    pub fn signer(&self) -> &PrivateKeySigner {
        &self.signer
    }
}

fn key_err(path: &Path, e: impl std::fmt::Display) -> NodeError {
    NodeError::Key(format!("{}: {e}", path.display()))
}

/// Writes a secret with mode 0600 from the start (no window where others can read it), and
/// never over an existing file.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(text.as_bytes())
}
