//! Every shipped scenario, simulated for real (a node, wallets, paid traffic), names the
//! bottleneck it was built to show (and the runner-up, where it says one), twice in a row.

use std::path::Path;
use std::process::Command;

#[test]
fn each_scenario_names_its_intended_bottleneck() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "toml"));
    files.sort();
    assert!(files.len() >= 14, "scenarios/ should ship at least fourteen scenarios");
    let mut layers = std::collections::BTreeSet::new();
    for f in &files {
        let spec: toml::Value = toml::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        let expect = spec["expect"].as_str().unwrap_or_else(|| panic!("{} has no expect", f.display())).to_owned();
        for run in 0..2 {
            let out = Command::new(env!("CARGO_BIN_EXE_verinet"))
                .args(["simulate", "--json", "--check", "--scenario"])
                .arg(f)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{} (run {run}): {stderr}", f.display());
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(report["bottleneck"]["layer"], expect.as_str(), "{}: {}", f.display(), report["bottleneck"]["reason"]);
            if let Some(next) = spec.get("expect_runner_up").and_then(|v| v.as_str()) {
                assert_eq!(report["bottleneck"]["runner_up"], next, "{}: {}", f.display(), report["scores"]);
            }
        }
        layers.insert(expect);
    }
    for layer in ["none", "compute", "applications", "users", "payments", "incentives", "verification", "trust"] {
        assert!(layers.contains(layer), "no scenario shows {layer}");
    }
}
