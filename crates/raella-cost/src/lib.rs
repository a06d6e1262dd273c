//! The energy, area and throughput model of ReRAM processing-in-memory
//! accelerators (RAELLA, ISAAC and the ablation steps).
//!
//! It never sees tensors: energy is the sum over events of count x energy per
//! event ([`layer_energy`]), with event counts ([`LayerWork`]) from the
//! functional simulation or estimated from a layer's shape and statistics file;
//! area comes from the organisation ([`tile_area`]); throughput from cycles,
//! mapping and pipelining with replication of the slowest layer ([`map_network`]).
//! Component energies live in `fixtures/cost/components.toml`, each entry with
//! its source; a design's organisation ([`CostArch`]) is built by the caller
//! from the same knobs that configure its simulation (`fixtures/presets.toml`).
//!
//! ```
//! use raella_cost::{CostArch, DacKind, DigitalCorrection, LayerShape, LayerWork, LayerStatistics,
//!     InputScheme, Tiles};
//!
//! let arch = CostArch {
//!     rows: 512, cols: 512, devices_per_cell: 2, cell_area_f2: 5.49, r_on_ohm: 1333.0, max_level: 15,
//!     adc_bits: 7, adcs_per_crossbar: 4, dac: DacKind::PulseTrain, crossbars_per_macro: 4,
//!     macros_per_tile: 8, tiles: Tiles::IsoArea, tiles_per_router: 4, cycle_ns: 100.0,
//!     correction: DigitalCorrection::Center,
//! };
//! let shape = LayerShape { name: "fc".into(), vectors: 1.0, groups: 1, rows: 512, filters: 170,
//!     in_elems: 512.0, out_elems: 170.0 };
//! let stats = LayerStatistics { average_weight_value: 0.1, average_input_value: 0.05,
//!     adc_action_share: 0.42, cim_units_per_weight: 3, speculation_enabled: true };
//! let scheme = InputScheme { slice_widths: vec![4, 2, 2], recovery: true, passes: 1.0 };
//! let w = LayerWork::estimate(shape, &arch, &stats, &scheme, "typical");
//! assert!((w.conversions - 510.0 * 8.0 * 0.42).abs() < 1e-9);
//! ```

mod arch;
mod error;
mod model;
mod tables;
mod work;
mod workload;

pub use arch::{Calibration, CostArch, DacKind, DigitalCorrection, Tiles};
pub use error::CostError;
pub use model::{
    Energy, LayerPlacement, MappingOptions, NetworkPerf, RecoveryTiming, TileArea, cycle_ns,
    layer_energy, map_network, tile_area,
};
pub use tables::Components;
pub use work::{InputScheme, LayerShape, LayerStatistics, LayerWork, blocks, layer_crossbars};
pub use workload::{TypicalStats, Workload, load_typical, parse_typical};
