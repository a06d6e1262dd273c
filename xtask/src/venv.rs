//! Private Python environments for the set-up and comparison scripts: a venv
//! under the git-ignored cache, with pinned requirements installed by pip, so
//! nothing depends on what the system Python happens to have.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// The version line a tool prints, or `None` when it cannot be run.
pub fn tool_version(program: &str) -> Option<String> {
    let out = Command::new(program).arg("--version").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Some(if text.is_empty() {
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    } else {
        text
    })
}

/// Checks that every program in `needs` runs, with one error naming all that
/// do not and why they are needed.
///
/// # Errors
/// The missing programs.
pub fn require_tools(task: &str, needs: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<String> = needs
        .iter()
        .filter(|(p, _)| tool_version(p).is_none())
        .map(|(p, why)| format!("`{p}` ({why})"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{task} needs {} on the PATH; install {} and run it again",
            missing.join(", "),
            if missing.len() == 1 { "it" } else { "them" }
        );
    }
    Ok(())
}

/// The Python of a venv at `dir`, created with `python3 -m venv` if absent, with
/// `requirements` installed by pip unless the same file (by SHA-256) was
/// installed there before.
///
/// # Errors
/// No python3, or venv creation or pip failed (pip's own output is shown).
pub fn ensure(dir: &Path, requirements: &Path) -> Result<PathBuf> {
    let python = dir.join("bin").join("python");
    if !python.is_file() {
        require_tools(
            "creating a Python venv",
            &[("python3", "Python 3.9 or newer")],
        )?;
        std::fs::create_dir_all(dir.parent().unwrap_or(dir))
            .with_context(|| format!("creating {}", dir.display()))?;
        eprintln!("venv: creating {}", dir.display());
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(dir)
            .status()
            .context("running python3 -m venv")?;
        if !status.success() || !python.is_file() {
            bail!(
                "python3 -m venv {} failed ({status}); on Debian/Ubuntu install python3-venv",
                dir.display()
            );
        }
    }
    let req = std::fs::read(requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    let digest: String = Sha256::digest(&req)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let stamp = dir.join(".requirements.sha256");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(digest.as_str()) {
        eprintln!(
            "venv: pip install -r {} into {}",
            requirements.display(),
            dir.display()
        );
        let status = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "-r"])
            .arg(requirements)
            .status()
            .context("running pip install")?;
        if !status.success() {
            bail!(
                "pip install -r {} failed ({status}) in the venv {}",
                requirements.display(),
                dir.display()
            );
        }
        std::fs::write(&stamp, &digest).with_context(|| format!("writing {}", stamp.display()))?;
    }
    Ok(python)
}
