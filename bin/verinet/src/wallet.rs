//! `verinet wallet new|show`: a secp256k1 key in a 0600 file.

use std::path::PathBuf;

use anyhow::Context;
use verinet_node::KeyFile;

use crate::cli::WalletArgs;

pub fn path(w: &WalletArgs) -> anyhow::Result<PathBuf> {
    match &w.wallet {
        Some(p) => Ok(p.clone()),
        None => Ok(dirs::home_dir().context("no home directory; pass --wallet")?.join(".verinet").join("wallet.key")),
    }
}

pub fn load(w: &WalletArgs) -> anyhow::Result<KeyFile> {
    let p = path(w)?;
    if !p.exists() {
        anyhow::bail!("no wallet at {} (create one with `verinet wallet new`)", p.display());
    }
    Ok(KeyFile::load(&p)?)
}

pub fn new(w: &WalletArgs) -> anyhow::Result<()> {
    let p = path(w)?;
    if p.exists() {
        anyhow::bail!("{} already exists; refusing to overwrite a key", p.display());
    }
    print(&KeyFile::create(&p)?, &p);
    Ok(())
}

pub fn show(w: &WalletArgs) -> anyhow::Result<()> {
    print(&load(w)?, &path(w)?);
    Ok(())
}

fn print(k: &KeyFile, p: &std::path::Path) {
    println!("address {}", k.address());
    println!("key     {}", p.display());
}
