//! The bad-input corpus (`fixtures/bad/case_*.toml`): every case exits
//! non-zero with a message naming the file, field and value, without a panic
//! and without result files.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

#[test]
fn every_bad_input_is_rejected_cleanly() {
    let dir = root().join("fixtures/bad");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("case_"))
        })
        .collect();
    cases.sort();
    assert!(cases.len() >= 19, "the corpus lost cases: {}", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let text = std::fs::read_to_string(case).unwrap();
        let expect: Vec<&str> = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect:"))
            .unwrap_or_else(|| panic!("{}: first line must be `# expect: ...`", case.display()))
            .split('|')
            .map(str::trim)
            .collect();
        let out = std::env::temp_dir().join(format!(
            "raella-bad-{}-{}",
            std::process::id(),
            case.file_stem().unwrap().to_string_lossy()
        ));
        let res = Command::new(env!("CARGO_BIN_EXE_raella-sweep"))
            .arg(case)
            .args([
                "--presets",
                &root().join("fixtures/presets.toml").display().to_string(),
            ])
            .args(["--out", &out.display().to_string()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&res.stderr);
        let name = case.file_name().unwrap().to_string_lossy();
        if res.status.success() {
            failures.push(format!("{name}: exited 0"));
        }
        if stderr.contains("panicked") {
            failures.push(format!("{name}: panicked: {stderr}"));
        }
        for e in &expect {
            if !stderr.contains(e) {
                failures.push(format!("{name}: message lacks `{e}`: {stderr}"));
            }
        }
        if out.exists() {
            failures.push(format!("{name}: wrote {}", out.display()));
            let _ = std::fs::remove_dir_all(&out);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
