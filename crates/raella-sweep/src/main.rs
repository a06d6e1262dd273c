//! `raella-sweep SPEC --out DIR --presets FILE`: runs a sweep and writes its
//! results. Normally started by `cargo xtask sweep`, which builds it optimised.
//! `--calibrate` instead fits the cost model's two coefficients on the spec's
//! calibration workload and prints them (`cargo xtask calibrate-cost`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use raella_sweep::{RunOptions, Spec, run_with, write_results};

/// The global allocator (see `mimalloc` in the workspace's `Cargo.toml`):
/// glibc's returns large freed blocks to the kernel and faults them in again on
/// the next layer; mimalloc keeps them ([`raella_sweep::keep_freed_memory`]
/// turns off its delayed return of freed memory too). No result depends on it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    raella_sweep::keep_freed_memory();
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> &'static str {
    "usage: raella-sweep SPEC.toml [--out DIR] [--presets FILE] [--shard K/N] [--images-shard J/M] [--no-cache] [--calibrate]\n       raella-sweep merge --out DIR [--presets FILE] SHARD_DIR...\n  --shard K/N         the K-th of N disjoint slices of the points (model x design x seed)\n  --images-shard J/M  the J-th of M contiguous ranges of whole evaluation batches of every\n                      selected point (writes DIR/part/, not results; merge the M parts)"
}

/// `K/N` of `--shard` or `--images-shard` (`flag`), with `1 <= K <= N`.
fn parse_shard(flag: &str, s: &str) -> anyhow::Result<(usize, usize)> {
    let (k, n) = s
        .split_once('/')
        .with_context(|| format!("{flag} `{s}`: expected K/N, e.g. 2/8"))?;
    let (k, n): (usize, usize) = (
        k.trim()
            .parse()
            .with_context(|| format!("{flag} `{s}`: K is not a number"))?,
        n.trim()
            .parse()
            .with_context(|| format!("{flag} `{s}`: N is not a number"))?,
    );
    if n == 0 || k == 0 || k > n {
        bail!("{flag} `{s}`: need 1 <= K <= N");
    }
    Ok((k, n))
}

fn real_main() -> anyhow::Result<()> {
    let mut spec = None;
    let mut out = None;
    let mut presets = None;
    let mut calibrate_only = false;
    let mut shard = None;
    let mut images_shard = None;
    let mut cache = true;
    let mut merge_dirs: Option<Vec<PathBuf>> = None;
    // Paths need not be UTF-8 (`std::env::args` would panic on one that is not).
    let mut args = std::env::args_os().skip(1).peekable();
    if args.peek().and_then(|a| a.to_str()) == Some("merge") {
        args.next();
        merge_dirs = Some(Vec::new());
    }
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--out") => {
                out = Some(PathBuf::from(
                    args.next().context("--out needs a directory")?,
                ))
            }
            Some("--presets") => {
                presets = Some(PathBuf::from(
                    args.next().context("--presets needs a file")?,
                ));
            }
            Some(flag @ ("--shard" | "--images-shard")) => {
                let k = args.next().with_context(|| format!("{flag} needs K/N"))?;
                let k = k
                    .to_str()
                    .with_context(|| format!("{flag} {}: expected K/N", k.to_string_lossy()))?;
                if flag == "--shard" {
                    shard = Some(parse_shard(flag, k)?);
                } else {
                    images_shard = Some(parse_shard(flag, k)?);
                }
            }
            Some("--no-cache") => cache = false,
            Some("--calibrate") => calibrate_only = true,
            Some(s) if s.starts_with('-') => bail!("unknown option `{s}`\n{}", usage()),
            _ => match &mut merge_dirs {
                Some(d) => d.push(PathBuf::from(a)),
                None => {
                    if spec.replace(PathBuf::from(a)).is_some() {
                        bail!("more than one spec given\n{}", usage());
                    }
                }
            },
        }
    }
    let presets = presets.unwrap_or_else(|| PathBuf::from("fixtures/presets.toml"));
    if let Some(dirs) = merge_dirs {
        if shard.is_some() || images_shard.is_some() {
            bail!(
                "merge takes no --shard or --images-shard: it reads them from the shard folders\n{}",
                usage()
            );
        }
        let out = out.context("merge needs --out DIR")?;
        raella_sweep::check_output_folder(&out).context("--out")?;
        let (spec, results) = raella_sweep::merge(&dirs, &presets)?;
        for w in write_results(&spec, &results, &out)? {
            eprintln!("wrote {}", w.display());
        }
        return Ok(());
    }
    let spec_path = spec.with_context(usage)?;
    let spec = Spec::load(&spec_path, &presets)?;
    if calibrate_only {
        let files = spec
            .cost
            .as_ref()
            .context("--calibrate needs a spec with a [cost] section")?;
        let cm = raella_sweep::CostModel::load(files)?;
        let (cal, fit) = raella_sweep::calibrate(&spec, &cm)?;
        println!(
            "# fitted on `{}` (paper ablation, mJ per batch)",
            cm.paper.as_ref().map_or("", |p| p.calibrate_on.as_str())
        );
        println!("cell_scale = {:.4}", cal.cell_scale);
        println!("pulse_dac_pj = {:.4}", cal.pulse_dac_pj);
        for (n, t, e) in fit {
            println!(
                "# {n}: paper {t:.3} mJ, fitted {e:.3} mJ ({:+.1}%)",
                (e / t - 1.0) * 100.0
            );
        }
        return Ok(());
    }
    let out = out.unwrap_or_else(|| PathBuf::from("results").join(&spec.name));
    // Before any model loads: a folder that cannot take the results is refused
    // now, not after the simulation (and not blamed on `.cache`).
    raella_sweep::check_output_folder(&out).context("--out")?;
    eprintln!("{}", raella_sweep::banner(&spec, shard, &out));
    let opts = RunOptions {
        shard,
        cache_dir: cache.then(|| out.join(".cache")),
        progress_bar: true,
    };
    if let Some(images) = images_shard {
        // An image range of every selected point: a part for `merge`, never
        // results (and never the point cache, which holds whole points only).
        eprintln!(
            "  images shard {}/{}: no cache, writes part/",
            images.0, images.1
        );
        let part = raella_sweep::run_images_part(&spec, &opts, images, |m| eprintln!("  {m}"))?;
        for w in raella_sweep::write_part(&spec, &part, &out)? {
            eprintln!("wrote {}", w.display());
        }
        return Ok(());
    }
    let results = run_with(&spec, &opts, |m| eprintln!("  {m}"))?;
    let written = write_results(&spec, &results, &out)?;
    for w in written {
        eprintln!("wrote {}", w.display());
    }
    Ok(())
}
