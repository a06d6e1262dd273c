//! The bad-input corpus (`fixtures/bad/case_*.toml`): every case exits
//! non-zero with a message naming the file, field and value, without a panic
//! and without result files (an output folder prepared by `# out:` lines is
//! left exactly as it was). Also the inputs that cannot be committed: a spec
//! named `..` run in a folder holding the user's `stats/` and `plots/`, FIFOs
//! and devices where files are expected.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{root, tmp};

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
    assert!(cases.len() >= 49, "the corpus lost cases: {}", cases.len());
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
        let _ = std::fs::remove_dir_all(&out);
        let _ = std::fs::remove_file(&out);
        // `# out: file PATH` / `# out: dir PATH` lines prepare the output folder.
        let mut prepared = false;
        for l in text.lines().skip(1) {
            let Some(rest) = l.strip_prefix("# out:") else {
                break;
            };
            let (kind, rel) = rest.trim().split_once(' ').expect("`# out: file|dir PATH`");
            let p = if rel == "." {
                out.clone()
            } else {
                out.join(rel)
            };
            if p != out {
                std::fs::create_dir_all(&out).unwrap();
            }
            match kind {
                "file" => std::fs::write(&p, "the user's own file").unwrap(),
                "dir" => std::fs::create_dir_all(&p).unwrap(),
                other => panic!("{}: `# out: {other}`", case.display()),
            }
            prepared = true;
        }
        let before = snapshot(&out);
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
        if prepared {
            if snapshot(&out) != before {
                failures.push(format!("{name}: changed {}", out.display()));
            }
        } else if out.exists() {
            failures.push(format!("{name}: wrote {}", out.display()));
        }
        let _ = std::fs::remove_dir_all(&out);
        let _ = std::fs::remove_file(&out);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every path under `p` (or `p` itself if a file) with its bytes, sorted.
fn snapshot(p: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    if p.is_file() {
        out.push((p.to_path_buf(), std::fs::read(p).unwrap()));
        return out;
    }
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let e = e.unwrap().path();
            if e.is_dir() {
                out.push((e.clone(), vec![]));
                stack.push(e);
            } else {
                out.push((e.clone(), std::fs::read(&e).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

/// Runs the binary in `cwd`, failing the test if it has not finished within a
/// minute (a FIFO read blocks forever).
fn run_in(cwd: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_raella-sweep"))
        .args(args)
        .args([
            "--presets",
            &root().join("fixtures/presets.toml").display().to_string(),
        ])
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("raella-sweep {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A spec in `dir` on the real MNIST fixture, with `head` first.
fn spec(dir: &Path, head: &str) -> PathBuf {
    let fx = root().join("fixtures/mnist_cnn");
    let p = dir.join("spec.toml");
    std::fs::write(
        &p,
        format!(
            "{head}\narchs = [\"raella\"]\n[[model]]\nname = \"m\"\nonnx = \"{}\"\nimages = \"{}\"\nlabels = \"{}\"\ncalibration = {{ start = 0, count = 1 }}\nevaluation = {{ start = 1, count = 1 }}\n",
            fx.join("mnist_cnn.onnx").display(),
            fx.join("mnist-digits-images-idx3-ubyte.gz").display(),
            fx.join("mnist-digits-labels-idx1-ubyte.gz").display()
        ),
    )
    .unwrap();
    p
}

/// The data-loss report: `name = ".."` and no `--out` made the current
/// directory the output folder, and its `stats/` and `plots/` were deleted.
/// Neither that nor an explicit `--out .` touches a folder the sweep did not
/// write.
#[test]
fn the_users_stats_and_plots_survive_a_dotdot_name_and_out_dot() {
    let d = tmp("dotdot");
    let cwd = d.join("work");
    for f in ["stats/keep.txt", "plots/keep.svg", "report.md"] {
        let p = cwd.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "the user's own").unwrap();
    }
    std::fs::create_dir_all(cwd.join("results")).unwrap();
    let before = snapshot(&d);
    let s = spec(&d, "name = \"..\"");
    let res = run_in(&cwd, &[s.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success(), "{stderr}");
    assert!(stderr.contains("`name` = \"..\""), "{stderr}");
    let s = spec(&d, "name = \"ok\"");
    let res = run_in(&cwd, &[s.to_str().unwrap(), "--out", "."]);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success(), "{stderr}");
    assert!(
        stderr.contains("`report.md`, `stats`, `plots`") && stderr.contains("marker"),
        "{stderr}"
    );
    std::fs::remove_file(&s).unwrap();
    assert_eq!(snapshot(&d), before, "the user's files changed");
    std::fs::remove_dir_all(&d).unwrap();
}

/// FIFOs and devices where files are expected: a clear error at once, never
/// a read that blocks or never ends.
#[cfg(unix)]
#[test]
fn fifos_and_devices_are_refused_without_blocking() {
    let d = tmp("fifo");
    let mkfifo = |p: &Path| {
        assert!(
            Command::new("mkfifo").arg(p).status().unwrap().success(),
            "mkfifo {}",
            p.display()
        );
    };
    let check = |args: &[&str], want: &[&str]| {
        let res = run_in(&d, args);
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert!(!res.status.success(), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        for w in want {
            assert!(stderr.contains(w), "{args:?}: lacks `{w}`: {stderr}");
        }
    };
    // The spec itself: a device, a FIFO, a folder.
    check(
        &["/dev/zero", "--out", "o"],
        &["/dev/zero", "character device"],
    );
    let fifo = d.join("spec.toml");
    mkfifo(&fifo);
    check(
        &["spec.toml", "--out", "o"],
        &["spec.toml", "named pipe (FIFO)"],
    );
    std::fs::remove_file(&fifo).unwrap();
    check(&[".", "--out", "o"], &["is a folder"]);
    // A FIFO as the model, and in a photo folder.
    let s = spec(&d, "");
    let text = std::fs::read_to_string(&s).unwrap();
    let onnx = root().join("fixtures/mnist_cnn/mnist_cnn.onnx");
    mkfifo(&d.join("m.onnx"));
    std::fs::write(
        &s,
        text.replace(
            &onnx.display().to_string(),
            &d.join("m.onnx").display().to_string(),
        ),
    )
    .unwrap();
    check(&["spec.toml", "--out", "o"], &["`onnx`", "m.onnx", "FIFO"]);
    let photos = d.join("photos");
    std::fs::create_dir(&photos).unwrap();
    image_png(&photos.join("a.png"));
    mkfifo(&photos.join("b.png"));
    let images = root().join("fixtures/mnist_cnn/mnist-digits-images-idx3-ubyte.gz");
    let photo_spec: String = text
        .replace(&images.display().to_string(), &photos.display().to_string())
        .lines()
        .filter(|l| !l.starts_with("labels"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&s, photo_spec).unwrap();
    check(&["spec.toml", "--out", "o"], &["b.png", "FIFO"]);
    assert!(!d.join("o").exists());
    std::fs::remove_dir_all(&d).unwrap();
}

/// A 1x1 grey PNG, written by hand (no encoder needed).
fn image_png(path: &Path) {
    fn crc(data: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend(u32::try_from(data.len()).unwrap().to_be_bytes());
        let mut body = kind.to_vec();
        body.extend(data);
        out.extend(&body);
        out.extend(crc(&body).to_be_bytes());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0]);
    // zlib stream of the one row (filter 0, grey 128), stored uncompressed.
    let row = [0u8, 128];
    let mut z = vec![0x78, 0x01, 1, 2, 0, 0xfd, 0xff];
    z.extend(row);
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &row {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    z.extend(((b << 16) | a).to_be_bytes());
    chunk(&mut png, b"IDAT", &z);
    chunk(&mut png, b"IEND", &[]);
    std::fs::write(path, png).unwrap();
}

/// Arguments that are not UTF-8 (paths need not be): an error, not a panic.
#[cfg(unix)]
#[test]
fn non_utf8_arguments_are_errors_not_panics() {
    use std::os::unix::ffi::OsStrExt;
    let d = tmp("utf8");
    let bad = std::ffi::OsStr::from_bytes(b"\xff.toml");
    for args in [
        vec![bad],
        vec![
            std::ffi::OsStr::new("x.toml"),
            std::ffi::OsStr::new("--out"),
            bad,
        ],
    ] {
        let res = Command::new(env!("CARGO_BIN_EXE_raella-sweep"))
            .args(&args)
            .current_dir(&d)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert!(
            !res.status.success() && !stderr.contains("panicked"),
            "{stderr}"
        );
        assert!(stderr.contains(".toml"), "{stderr}");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// Image-range shards (`--images-shard J/M`): J > M, M = 0, M larger than a
/// model's evaluation batches, a merge with a part missing and a merge given
/// a shard option each exit non-zero, name the value and write nothing (no
/// output folder appears).
#[test]
fn bad_image_shards_are_refused_and_write_nothing() {
    let d = tmp("images");
    // One evaluation image: one batch.
    let s = spec(&d, "name = \"img\"").display().to_string();
    let out = d.join("out");
    let o = out.display().to_string();
    let cases: [(&[&str], &str); 4] = [
        (
            &[&s, "--images-shard", "3/2", "--out", &o],
            "`3/2`: need 1 <= K <= N",
        ),
        (&[&s, "--images-shard", "1/0", "--out", &o], "`1/0`"),
        (
            &[&s, "--images-shard", "x/2", "--out", &o],
            "`x/2`: K is not a number",
        ),
        (
            &[&s, "--images-shard", "1/2", "--out", &o],
            "--images-shard 1/2: model \"m\"",
        ),
    ];
    for (args, want) in cases {
        let res = run_in(&d, args);
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert!(
            !res.status.success() && stderr.contains(want) && !stderr.contains("panicked"),
            "{args:?}: {stderr}"
        );
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
    // The one part of 1/1 merges; without it (another spec's part) nothing does.
    let part = d.join("part1");
    let res = run_in(
        &d,
        &[
            &s,
            "--images-shard",
            "1/1",
            "--out",
            &part.display().to_string(),
        ],
    );
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(part.join("part/part.json").exists() && !part.join("results.csv").exists());
    let other = d.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let s2 = spec(&other, "name = \"img\"\nseeds = [1, 2]")
        .display()
        .to_string();
    let part2 = d.join("part2");
    let res = run_in(
        &d,
        &[
            &s2,
            "--images-shard",
            "1/1",
            "--shard",
            "1/2",
            "--out",
            &part2.display().to_string(),
        ],
    );
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    for (args, want) in [
        (
            vec!["merge", "--out", &o, &part2.display().to_string()],
            "seed 2: images part 1/1 is in none of the shard folders",
        ),
        (
            vec![
                "merge",
                "--out",
                &o,
                &part.display().to_string(),
                &part2.display().to_string(),
            ],
            "shards of different specs do not merge",
        ),
        (
            vec![
                "merge",
                "--images-shard",
                "1/2",
                "--out",
                &o,
                &part.display().to_string(),
            ],
            "merge takes no --shard or --images-shard",
        ),
    ] {
        let res = run_in(&d, &args);
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert!(
            !res.status.success() && stderr.contains(want) && !stderr.contains("panicked"),
            "{args:?}: {stderr}"
        );
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
    std::fs::remove_dir_all(&d).unwrap();
}
