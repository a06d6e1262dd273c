//! The sweep driver of the RAELLA simulator: TOML sweep specs and named
//! architecture presets, grids of models x designs x seeds run through the
//! network crate, and the result files (`results.csv`, `results.json`,
//! `report.md`, per-layer statistics in the RAELLA artifact's format).
//!
//! ```no_run
//! use std::path::Path;
//! use raella_sweep::{Spec, run, write_results};
//!
//! let spec = Spec::load(Path::new("fixtures/sweeps/default.toml"), Path::new("fixtures/presets.toml"))?;
//! let results = run(&spec, |msg| eprintln!("{msg}"))?;
//! write_results(&spec, &results, Path::new("results/default"))?;
//! # Ok::<(), anyhow::Error>(())
//! ```

mod allocator;
mod cost;
mod merge;
mod names;
mod output;
mod parts;
mod plots;
mod report;
mod run;
mod simulate;
mod spec;

pub use allocator::keep_freed_memory;
pub use cost::{
    CostModel, EnergyRow, LayerCost, PaperAblation, TypicalSource, calibrate, cost_measured,
    cost_simulated, cost_sweep, cost_workloads,
};
pub use merge::{merge, spec_hash};
pub use names::{MAX_NAME_LEN, NAME_PUNCTUATION, check_folder_name, check_name, file_component};
pub use output::{
    CACHE, MARKER, OutputError, RESULT_FILES, RESULT_FOLDERS, check_output_folder, write_output,
};
pub use parts::{PART_DIR, PartResults, part_range, run_images_part, write_part};
pub use plots::{Plot, plots};
pub use report::{CSV_COLUMNS, ENERGY_COLUMNS, write_results};
pub use run::{
    AWS_CALIBRATION_IMAGES, ColumnSumHistogram, HISTOGRAM_BIN, HISTOGRAM_BINS, HISTOGRAM_MIN,
    LayerRow, LoadedModel, ModelSummary, ReferenceCorrelations, ResultRow, RunOptions,
    SweepResults, Timing, banner, load_images, load_model, run, run_with,
};
pub use simulate::{LayerReport, Reference, Simulation, SimulationRun, reference};
pub use spec::{
    Arch, ArchKnobs, CostFiles, CostOptions, ImageRange, MAX_BATCH, MAX_DESIGNS, MAX_POINTS,
    MAX_SEEDS, ModelSpec, Spec, SpecError, TextFiles, WorkloadSpec, designs, load_designs,
    load_presets, parse_presets, resolve_design, resolve_design_in,
};
