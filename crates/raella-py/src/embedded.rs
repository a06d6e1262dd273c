//! The tables an installed wheel carries instead of a checkout: the named
//! designs (`fixtures/presets.toml`) and the cost model's default tables
//! (`fixtures/cost/`, as the default sweep's `[cost]` section names them),
//! compiled in. They are the files themselves, so a preset means the same
//! design here as on the command line.

use std::collections::BTreeMap;
use std::path::Path;

use raella_cost::{Calibration, Components, parse_typical};
use raella_sweep::{Arch, CostModel, CostOptions, SpecError};

/// `fixtures/presets.toml`.
pub const PRESETS: &str = include_str!("../../../fixtures/presets.toml");
/// `fixtures/cost/components.toml`.
pub const COMPONENTS: &str = include_str!("../../../fixtures/cost/components.toml");
/// `fixtures/cost/calibration.toml`.
pub const CALIBRATION: &str = include_str!("../../../fixtures/cost/calibration.toml");
/// `fixtures/cost/typical_stats.toml`.
pub const TYPICAL: &str = include_str!("../../../fixtures/cost/typical_stats.toml");

/// The name the embedded presets go by in messages.
pub const PRESETS_NAME: &str = "presets.toml (built into raella_sim)";

/// The preset designs, by name.
///
/// # Errors
/// Never for the shipped file (a unit test parses it); the parser's error otherwise.
pub fn designs() -> Result<BTreeMap<String, Arch>, SpecError> {
    Ok(raella_sweep::designs(raella_sweep::parse_presets(
        Path::new(PRESETS_NAME),
        PRESETS,
    )?))
}

/// The cost model of the default sweep's `[cost]` section: the shipped
/// component tables, calibration and typical statistics, default mapping and
/// timing options, and `isaac8b` as the iso-area reference.
///
/// # Errors
/// Never for the shipped files (a unit test loads them); the parser's error otherwise.
pub fn cost_model() -> anyhow::Result<CostModel> {
    let name = |f: &str| format!("{f} (built into raella_sim)");
    let designs = designs()?;
    let reference = designs
        .get("isaac8b")
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the built-in presets have no `isaac8b`"))?;
    Ok(CostModel {
        paper: None,
        components: Components::parse(Path::new(&name("components.toml")), COMPONENTS)?,
        reference,
        calibration: Calibration::parse(Path::new(&name("calibration.toml")), CALIBRATION)?,
        typical: parse_typical(Path::new(&name("typical_stats.toml")), TYPICAL)?,
        options: CostOptions::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    #[test]
    fn embedded_presets_are_the_fixture_presets() {
        let file = raella_sweep::load_designs(&root().join("fixtures/presets.toml")).unwrap();
        assert_eq!(designs().unwrap(), file);
        assert!(file.contains_key("raella") && file.contains_key("isaac8b"));
    }

    #[test]
    fn embedded_cost_model_is_the_default_sweeps() {
        let spec = raella_sweep::Spec::load(
            &root().join("fixtures/sweeps/default.toml"),
            &root().join("fixtures/presets.toml"),
        )
        .unwrap();
        let files = spec.cost.as_ref().unwrap();
        let from_files = CostModel::load(files).unwrap();
        let embedded = cost_model().unwrap();
        assert_eq!(embedded.components, from_files.components);
        assert_eq!(embedded.calibration, from_files.calibration);
        assert_eq!(embedded.typical, from_files.typical);
        assert_eq!(embedded.options, from_files.options);
        // The spec's reference is the preset without its own name as `preset`.
        assert_eq!(embedded.reference.name, from_files.reference.name);
        assert_eq!(
            embedded.reference.cost_arch(),
            from_files.reference.cost_arch()
        );
    }
}
