//! The output folder of a sweep: checked before anything is loaded, written
//! through a staging folder, and left exactly as it was when anything fails.
//!
//! A sweep owns a fixed set of *slots* in its output folder: the result files
//! ([`RESULT_FILES`]), the `stats/` and `plots/` folders, and the marker file
//! [`MARKER`] that says a sweep wrote the folder. A run replaces the slots a
//! previous run wrote, and nothing else:
//!
//! - [`check_output_folder`] (run before any model loads) refuses a folder
//!   that is a file, a slot of the wrong kind (a file where `stats/` goes, a
//!   folder where `results.csv` goes), and occupied slots without the marker
//!   (a folder the sweep did not write, such as the current directory).
//! - [`write_output`] writes every file into a fresh staging folder inside the
//!   output folder, then moves each old slot aside and each new one into place,
//!   recording every move. If a move fails, the recorded moves are undone, the
//!   staging folder is removed and the folders the call created are removed
//!   again: the output folder is as it was. On success the staging folder,
//!   holding the previous run's slots, is removed.
//!
//! `DIR/.cache/` (finished points, so that a rerun resumes) is not a slot: a
//! run adds to it and never removes from it.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use thiserror::Error;

/// The marker file: its presence says a sweep wrote this folder.
pub const MARKER: &str = ".raella-sweep";

/// The result files a sweep may write at the top of its output folder.
pub const RESULT_FILES: [&str; 7] = [
    "results.csv",
    "results.json",
    "report.md",
    "timings.csv",
    "energy.csv",
    "energy_breakdown.csv",
    "energy_layers.csv",
];

/// The folders a sweep writes (replaced whole). `part/` is what an image-range
/// shard (`--images-shard`) writes instead of results, for `merge`.
pub const RESULT_FOLDERS: [&str; 3] = ["stats", "plots", "part"];

/// The cache folder (added to, never replaced).
pub const CACHE: &str = ".cache";

const MARKER_TEXT: &str = "This folder holds the results of a raella-sweep run. The next sweep \
written here replaces its result files, stats/ and plots/; .cache/ holds finished points.\n";

/// Why results cannot be written.
#[derive(Debug, Error)]
pub enum OutputError {
    /// The output folder cannot take the results (nothing was changed).
    #[error("output folder {out}: {reason}")]
    Refused {
        /// The output folder.
        out: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file-system operation failed (the folder was restored).
    #[error("{path}: {op}: {source}")]
    Io {
        /// The path operated on.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// Undoing a failed write failed too; the previous results are kept in the
    /// staging folder.
    #[error(
        "{first}; restoring the previous results also failed ({undo}); they are kept in {stage}"
    )]
    Restore {
        /// The failure that started the undo.
        first: Box<OutputError>,
        /// The failure of the undo.
        undo: Box<OutputError>,
        /// Where the previous results are.
        stage: PathBuf,
    },
}

fn refused(out: &Path, reason: impl Into<String>) -> OutputError {
    OutputError::Refused {
        out: out.to_path_buf(),
        reason: reason.into(),
    }
}

fn io(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> OutputError {
    let path = path.to_path_buf();
    move |source| OutputError::Io { path, op, source }
}

/// What a path is (following symbolic links), or `None` if nothing is there.
fn kind(path: &Path) -> Option<&'static str> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    let meta = std::fs::metadata(path).unwrap_or(meta);
    let ft = meta.file_type();
    Some(if ft.is_dir() {
        "a folder"
    } else if ft.is_file() {
        "a file"
    } else if ft.is_symlink() {
        "a broken symbolic link"
    } else {
        "a FIFO, device or socket"
    })
}

/// Whether the folder holds the marker, or (written before the marker existed)
/// a sweep's `results.json`.
fn written_by_sweep(out: &Path) -> bool {
    if kind(&out.join(MARKER)) == Some("a file") {
        return true;
    }
    let json = out.join("results.json");
    raella_data::files::read_file(&json, raella_data::files::FileKind::Results)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v.get("spec_sha256").is_some() && v.get("rows").is_some())
}

/// Checks, changing nothing, that a sweep may write its results into `out`:
/// `out` is a folder or does not exist yet (and its nearest existing ancestor
/// is a folder); every slot present has the right kind; occupied slots carry
/// the sweep's marker; `.cache` is a folder if present.
///
/// # Errors
/// [`OutputError::Refused`] naming the folder, the slot and what is there.
pub fn check_output_folder(out: &Path) -> Result<(), OutputError> {
    if out.as_os_str().is_empty() {
        return Err(refused(out, "the path is empty"));
    }
    match kind(out) {
        Some("a folder") => {}
        Some(other) => return Err(refused(out, format!("is {other}, not a folder"))),
        None => {
            let mut a = out.parent();
            while let Some(p) = a.filter(|p| !p.as_os_str().is_empty()) {
                match kind(p) {
                    Some("a folder") => break,
                    Some(other) => {
                        return Err(refused(
                            out,
                            format!("cannot be created: {} is {other}", p.display()),
                        ));
                    }
                    None => a = p.parent(),
                }
            }
            return Ok(());
        }
    }
    let mut occupied = Vec::new();
    for f in RESULT_FILES.iter().chain(&[MARKER]) {
        match kind(&out.join(f)) {
            None => {}
            Some("a file") => occupied.push(*f),
            Some(other) => {
                return Err(refused(
                    out,
                    format!("`{f}` is {other} where the sweep writes a file"),
                ));
            }
        }
    }
    for d in RESULT_FOLDERS.iter().chain(&[CACHE]) {
        match kind(&out.join(d)) {
            None => {}
            Some("a folder") if *d == CACHE => {}
            Some("a folder") => occupied.push(*d),
            Some(other) => {
                return Err(refused(
                    out,
                    format!("`{d}` is {other} where the sweep writes a folder"),
                ));
            }
        }
    }
    if !occupied.is_empty() && !written_by_sweep(out) {
        return Err(refused(
            out,
            format!(
                "holds {} but no `{MARKER}` marker: a sweep did not write this folder and will not replace them; \
                choose another output folder (--out) or move them away",
                occupied
                    .iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok(())
}

/// The slot a result path belongs to, if it is a plain relative path inside one.
fn slot_of(rel: &Path) -> Option<&'static str> {
    let mut parts = rel.components();
    let Some(Component::Normal(first)) = parts.next() else {
        return None;
    };
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    let first = first.to_str()?;
    let rest = parts.next().is_some();
    if rest {
        RESULT_FOLDERS.iter().find(|d| **d == first).copied()
    } else {
        RESULT_FILES.iter().find(|f| **f == first).copied()
    }
}

/// One recorded move of the commit phase, undone in reverse on failure.
enum Move {
    /// An old slot moved from the output folder into `stage/old`.
    Aside(&'static str),
    /// A new slot moved from `stage/new` into the output folder.
    Placed(&'static str),
}

/// Writes `files` (paths relative to `out`, each inside a slot) into `out`,
/// replacing the slots a previous sweep wrote there. Returns the slots written.
///
/// # Errors
/// [`check_output_folder`]'s refusals, a path outside the slots or given
/// twice, or a file-system error; in every case `out` is left as it was.
pub fn write_output<C: AsRef<[u8]>>(
    out: &Path,
    files: &[(PathBuf, C)],
) -> Result<Vec<PathBuf>, OutputError> {
    write_output_failing_after(out, files, None)
}

fn write_output_failing_after<C: AsRef<[u8]>>(
    out: &Path,
    files: &[(PathBuf, C)],
    fail_after: Option<usize>,
) -> Result<Vec<PathBuf>, OutputError> {
    check_output_folder(out)?;
    let mut seen = HashSet::new();
    for (rel, _) in files {
        if slot_of(rel).is_none() {
            return Err(refused(
                out,
                format!("`{}` is not a result path (internal error)", rel.display()),
            ));
        }
        if !seen.insert(rel) {
            return Err(refused(
                out,
                format!(
                    "two results map to the same file `{}`; rename one of them",
                    rel.display()
                ),
            ));
        }
    }
    let created = create_dirs(out)?;
    let stage = match make_stage(out) {
        Ok(s) => s,
        Err(e) => {
            remove_created(&created);
            return Err(e);
        }
    };
    let result = stage_and_commit(out, &stage, files, fail_after);
    match result {
        Ok(written) => {
            // The staging folder holds only what this run staged and the slots
            // the previous sweep wrote (the marker said so).
            std::fs::remove_dir_all(&stage).map_err(io(&stage, "removing the staging folder"))?;
            Ok(written)
        }
        Err(e @ OutputError::Restore { .. }) => Err(e),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&stage);
            remove_created(&created);
            Err(e)
        }
    }
}

/// Creates `out` and its missing ancestors; returns those it created, deepest first.
fn create_dirs(out: &Path) -> Result<Vec<PathBuf>, OutputError> {
    let mut missing = Vec::new();
    let mut a = Some(out);
    while let Some(p) = a.filter(|p| !p.as_os_str().is_empty() && kind(p).is_none()) {
        missing.push(p.to_path_buf());
        a = p.parent();
    }
    let mut created = Vec::new();
    for p in missing.iter().rev() {
        if let Err(e) = std::fs::create_dir(p) {
            remove_created(&created);
            return Err(io(p, "creating the output folder")(e));
        }
        created.insert(0, p.clone());
    }
    Ok(created)
}

/// Removes the folders this call created, if they are still empty.
fn remove_created(created: &[PathBuf]) {
    for p in created {
        let _ = std::fs::remove_dir(p);
    }
}

/// A fresh staging folder `out/.partial-<pid>-<n>` (created, so it is ours).
fn make_stage(out: &Path) -> Result<PathBuf, OutputError> {
    for n in 0..1000 {
        let s = out.join(format!(".partial-{}-{n}", std::process::id()));
        match std::fs::create_dir(&s) {
            Ok(()) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(&s, "creating the staging folder")(e)),
        }
    }
    Err(refused(out, "no free staging folder name (.partial-*)"))
}

fn stage_and_commit<C: AsRef<[u8]>>(
    out: &Path,
    stage: &Path,
    files: &[(PathBuf, C)],
    fail_after: Option<usize>,
) -> Result<Vec<PathBuf>, OutputError> {
    let (new, old) = (stage.join("new"), stage.join("old"));
    for d in [&new, &old] {
        std::fs::create_dir(d).map_err(io(d, "creating the staging folder"))?;
    }
    for (rel, text) in files
        .iter()
        .map(|(r, t)| (r.as_path(), t.as_ref()))
        .chain(std::iter::once((Path::new(MARKER), MARKER_TEXT.as_bytes())))
    {
        let p = new.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent, "creating"))?;
        }
        std::fs::write(&p, text).map_err(io(&p, "writing"))?;
    }
    // The marker first: a run killed half-way leaves a folder the next run may
    // replace.
    let slots: Vec<&'static str> = std::iter::once(MARKER)
        .chain(RESULT_FILES)
        .chain(RESULT_FOLDERS)
        .collect();
    let mut moves: Vec<Move> = Vec::new();
    match commit(out, &new, &old, &slots, &mut moves, fail_after) {
        Ok(w) => Ok(w),
        Err(first) => {
            for m in moves.iter().rev() {
                let undone = match m {
                    Move::Placed(s) => std::fs::rename(out.join(s), new.join(s))
                        .map_err(io(&out.join(s), "taking the new result back")),
                    Move::Aside(s) => std::fs::rename(old.join(s), out.join(s))
                        .map_err(io(&out.join(s), "restoring the previous result")),
                };
                if let Err(undo) = undone {
                    return Err(OutputError::Restore {
                        first: Box::new(first),
                        undo: Box::new(undo),
                        stage: stage.to_path_buf(),
                    });
                }
            }
            Err(first)
        }
    }
}

/// Moves each old slot aside and each new one into place, recording every move.
fn commit(
    out: &Path,
    new: &Path,
    old: &Path,
    slots: &[&'static str],
    moves: &mut Vec<Move>,
    fail_after: Option<usize>,
) -> Result<Vec<PathBuf>, OutputError> {
    let injected = |done: usize| {
        if fail_after.is_some_and(|n| done >= n) {
            Err(OutputError::Io {
                path: out.to_path_buf(),
                op: "moving results into place",
                source: std::io::Error::other("injected failure (test)"),
            })
        } else {
            Ok(())
        }
    };
    let mut written = Vec::new();
    for slot in slots {
        let (dst, fresh) = (out.join(slot), new.join(slot));
        if kind(&dst).is_some() {
            injected(moves.len())?;
            std::fs::rename(&dst, old.join(slot))
                .map_err(io(&dst, "moving the previous result aside"))?;
            moves.push(Move::Aside(slot));
        }
        if kind(&fresh).is_some() {
            injected(moves.len())?;
            std::fs::rename(&fresh, &dst).map_err(io(&dst, "moving the result into place"))?;
            moves.push(Move::Placed(slot));
            if *slot != MARKER {
                written.push(dst);
            }
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("raella-output-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Every path under `d` with its contents (folders as `/`).
    fn snapshot(d: &Path) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        let mut stack = vec![d.to_path_buf()];
        while let Some(p) = stack.pop() {
            for e in std::fs::read_dir(&p).unwrap() {
                let e = e.unwrap().path();
                let rel = e.strip_prefix(d).unwrap().to_path_buf();
                if e.is_dir() {
                    out.push((rel, "/".into()));
                    stack.push(e);
                } else {
                    out.push((rel, std::fs::read_to_string(&e).unwrap_or_default()));
                }
            }
        }
        out.sort();
        out
    }

    fn files(tag: &str) -> Vec<(PathBuf, String)> {
        vec![
            (PathBuf::from("results.csv"), format!("csv {tag}")),
            (PathBuf::from("report.md"), format!("md {tag}")),
            (PathBuf::from("stats/m/a/l.txt"), format!("stats {tag}")),
            (PathBuf::from("plots/p.svg"), format!("svg {tag}")),
        ]
    }

    #[test]
    fn replaces_what_a_sweep_wrote_and_nothing_else() {
        let d = tmp("replace");
        let out = d.join("a/b/out");
        write_output(&out, &files("1")).unwrap();
        std::fs::write(out.join("energy.csv"), "stale").unwrap();
        std::fs::write(out.join("notes.txt"), "mine").unwrap();
        std::fs::create_dir_all(out.join(".cache")).unwrap();
        std::fs::write(out.join(".cache/p.json"), "point").unwrap();
        let w = write_output(&out, &files("2")).unwrap();
        assert_eq!(w.len(), 4);
        let snap = snapshot(&out);
        let names: Vec<String> = snap.iter().map(|(p, _)| p.display().to_string()).collect();
        assert!(!names.contains(&"energy.csv".to_string()), "{names:?}");
        assert!(names.contains(&"notes.txt".to_string()), "{names:?}");
        assert!(names.contains(&".cache/p.json".to_string()), "{names:?}");
        assert!(
            !names.iter().any(|n| n.starts_with(".partial")),
            "{names:?}"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("stats/m/a/l.txt")).unwrap(),
            "stats 2"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn refuses_folders_it_did_not_write_and_slots_of_the_wrong_kind() {
        let d = tmp("refuse");
        // The user's own stats/ (the `name = ".."` data loss): refused, untouched.
        std::fs::create_dir_all(d.join("stats")).unwrap();
        std::fs::write(d.join("stats/keep.txt"), "precious").unwrap();
        let before = snapshot(&d);
        let e = write_output(&d, &files("1")).unwrap_err().to_string();
        assert!(e.contains("`stats`") && e.contains(MARKER), "{e}");
        assert_eq!(snapshot(&d), before);
        // A file where a result folder goes, a folder where a result file goes.
        std::fs::write(d.join(MARKER), "").unwrap();
        std::fs::remove_dir_all(d.join("stats")).unwrap();
        std::fs::write(d.join("stats"), "a file").unwrap();
        let before = snapshot(&d);
        let e = write_output(&d, &files("1")).unwrap_err().to_string();
        assert!(e.contains("`stats` is a file"), "{e}");
        assert_eq!(snapshot(&d), before);
        std::fs::remove_file(d.join("stats")).unwrap();
        std::fs::create_dir(d.join("report.md")).unwrap();
        let e = check_output_folder(&d).unwrap_err().to_string();
        assert!(e.contains("`report.md` is a folder"), "{e}");
        // An output folder that is a file, or under one.
        let f = d.join("file");
        std::fs::write(&f, "").unwrap();
        assert!(check_output_folder(&f).is_err());
        assert!(check_output_folder(&f.join("sub")).is_err());
        // Paths outside the slots, or given twice.
        let mut twice = files("1");
        twice.push(twice[0].clone());
        std::fs::remove_dir(d.join("report.md")).unwrap();
        assert!(write_output(&d, &twice).is_err());
        assert!(write_output(&d, &[(PathBuf::from("stats/../../x"), String::new())]).is_err());
        assert_eq!(snapshot(&d).len(), 2, "{:?}", snapshot(&d));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_failure_while_moving_restores_the_folder() {
        let d = tmp("undo");
        let out = d.join("out");
        write_output(&out, &files("1")).unwrap();
        std::fs::write(out.join("energy.csv"), "old energy").unwrap();
        let before = snapshot(&out);
        for n in 0..9 {
            let e = write_output_failing_after(&out, &files("2"), Some(n)).unwrap_err();
            assert!(e.to_string().contains("injected"), "{e}");
            assert_eq!(snapshot(&out), before, "after {n} moves");
        }
        // A new folder is removed again when the write fails.
        let fresh = d.join("fresh/out");
        assert!(write_output_failing_after(&fresh, &files("1"), Some(2)).is_err());
        assert!(!d.join("fresh").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
