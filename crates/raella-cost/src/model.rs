//! Energy = sum over events of (count x energy per event); area from the
//! organisation; latency and throughput from cycles, mapping and pipelining.

use std::ops::AddAssign;

use serde::Serialize;

use crate::CostError;
use crate::arch::{Calibration, CostArch, DacKind, DigitalCorrection};
use crate::tables::Components;
use crate::work::{LayerWork, blocks, layer_crossbars};

/// Energy in pJ by the published breakdown categories.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Energy {
    /// ADC readout + shift-add + column buffer.
    pub adc_pj: f64,
    /// Crossbar cell reads.
    pub cells_pj: f64,
    /// Input drivers / DACs.
    pub dac_pj: f64,
    /// Input buffer reads (and the running input sums of Center+Offset).
    pub input_buffer_pj: f64,
    /// Output registers, partial sums across row blocks, center correction.
    pub output_buffer_pj: f64,
    /// Requantisation.
    pub requantisation_pj: f64,
    /// eDRAM, bus and router.
    pub data_movement_pj: f64,
}

impl Energy {
    /// Sum of all categories.
    #[must_use]
    pub fn total_pj(&self) -> f64 {
        self.adc_pj
            + self.cells_pj
            + self.dac_pj
            + self.input_buffer_pj
            + self.output_buffer_pj
            + self.requantisation_pj
            + self.data_movement_pj
    }

    /// Every category multiplied by `k` (e.g. per inference to per batch).
    #[must_use]
    pub fn scaled(&self, k: f64) -> Self {
        Self {
            adc_pj: self.adc_pj * k,
            cells_pj: self.cells_pj * k,
            dac_pj: self.dac_pj * k,
            input_buffer_pj: self.input_buffer_pj * k,
            output_buffer_pj: self.output_buffer_pj * k,
            requantisation_pj: self.requantisation_pj * k,
            data_movement_pj: self.data_movement_pj * k,
        }
    }

    /// Energy per MAC, fJ, for `macs` MACs.
    #[must_use]
    pub fn fj_per_mac(&self, macs: f64) -> f64 {
        self.total_pj() * 1e3 / macs.max(1.0)
    }

    /// 8b x 8b operations per second per watt (2 ops per MAC), for `macs` MACs.
    #[must_use]
    pub fn tops_per_w(&self, macs: f64) -> f64 {
        2.0 * macs / self.total_pj().max(1e-12)
    }

    /// The categories with their names, in report order.
    #[must_use]
    pub fn categories(&self) -> [(&'static str, f64); 7] {
        [
            ("adc", self.adc_pj),
            ("cells", self.cells_pj),
            ("dac", self.dac_pj),
            ("input_buffer", self.input_buffer_pj),
            ("output_buffer", self.output_buffer_pj),
            ("requantisation", self.requantisation_pj),
            ("data_movement", self.data_movement_pj),
        ]
    }
}

impl AddAssign for Energy {
    fn add_assign(&mut self, o: Self) {
        self.adc_pj += o.adc_pj;
        self.cells_pj += o.cells_pj;
        self.dac_pj += o.dac_pj;
        self.input_buffer_pj += o.input_buffer_pj;
        self.output_buffer_pj += o.output_buffer_pj;
        self.requantisation_pj += o.requantisation_pj;
        self.data_movement_pj += o.data_movement_pj;
    }
}

/// Energy of one layer per inference.
///
/// # Errors
/// An ADC resolution missing from the table.
pub fn layer_energy(
    w: &LayerWork,
    arch: &CostArch,
    c: &Components,
    cal: &Calibration,
) -> Result<Energy, CostError> {
    let s = &w.shape;
    let (rb, _) = blocks(arch, s.rows, s.filters, w.weight_slices);
    let groups = s.groups as f64;
    let adc_pj = w.conversions
        * (c.adc_energy_pj(arch.adc_bits)?
            + c.shift_add.energy_pj_per_op
            + c.column_buffer.energy_pj_per_read);
    let cells_pj = w.cell_charge * c.cell_pulse_pj(arch.r_on_ohm) * cal.cell_scale;
    // A row driver spends energy when it drives a pulse: a 1-bit DAC on its `1`
    // inputs (ISAAC's published energy per drive), a pulse-train DAC per pulse
    // (a calibrated coefficient).
    let dac_pj = match arch.dac {
        DacKind::OneBit => w.input_pulses * c.dac_1b.energy_pj_per_drive,
        DacKind::PulseTrain => w.input_pulses * cal.pulse_dac_pj,
    };
    // Inputs are read once per vector, pass and row block (broadcast to the column
    // blocks), twice with speculation (speculative slices, then recovery).
    let input_reads =
        s.vectors * w.passes * groups * s.rows as f64 * if w.speculation { 2.0 } else { 1.0 };
    let mut input_buffer_pj = input_reads * 8.0 * c.buffer_pj_per_bit();
    let outputs = s.vectors * w.passes * groups * s.filters as f64;
    let mut output_buffer_pj =
        w.conversions * c.add_pj(16.0) + outputs * (rb as f64 - 1.0) * c.add_pj(32.0);
    match arch.correction {
        DigitalCorrection::Center => {
            // Running input sums, and one center multiply-add per output.
            input_buffer_pj += s.vectors * w.passes * groups * s.rows as f64 * c.add_pj(16.0);
            output_buffer_pj += outputs * (c.mul_pj(8.0, 16.0) + c.add_pj(32.0));
        }
        // The unsigned offset's digital `-128 * sum x`: one add per output.
        DigitalCorrection::Offset => output_buffer_pj += outputs * c.add_pj(32.0),
        DigitalCorrection::None => {}
    }
    let requantisation_pj = s.out_elems * c.requantisation.energy_pj_per_output;
    let bits = (s.in_elems + s.out_elems) * 8.0;
    let data_movement_pj = bits * (c.buffer_pj_per_bit() + c.bus.energy_pj_per_bit)
        + s.out_elems * 8.0 / 256.0 * c.router.energy_pj_per_256b;
    Ok(Energy {
        adc_pj,
        cells_pj,
        dac_pj,
        input_buffer_pj,
        output_buffer_pj,
        requantisation_pj,
        data_movement_pj,
    })
}

/// Area of one tile, by component (um^2).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct TileArea {
    /// ReRAM cells of all crossbars.
    pub cells_um2: f64,
    /// ADCs.
    pub adcs_um2: f64,
    /// Row drivers.
    pub dacs_um2: f64,
    /// Column buffers and shift-add units.
    pub column_periphery_um2: f64,
    /// Center correction units.
    pub center_units_um2: f64,
    /// eDRAM, bus and the tile's share of a router.
    pub tile_shared_um2: f64,
}

impl TileArea {
    /// The tile's total.
    #[must_use]
    pub fn total_um2(&self) -> f64 {
        self.cells_um2
            + self.adcs_um2
            + self.dacs_um2
            + self.column_periphery_um2
            + self.center_units_um2
            + self.tile_shared_um2
    }
}

/// Area of one tile of `arch`.
///
/// # Errors
/// An ADC resolution missing from the table.
pub fn tile_area(arch: &CostArch, c: &Components) -> Result<TileArea, CostError> {
    let xbars = (arch.crossbars_per_macro * arch.macros_per_tile) as f64;
    let f_um = c.technology_nm / 1000.0;
    let cells =
        (arch.rows * arch.cols * arch.devices_per_cell) as f64 * arch.cell_area_f2 * f_um * f_um;
    let adcs = arch.adcs_per_crossbar as f64 * c.adc_area_um2(arch.adc_bits)?;
    let dacs = arch.rows as f64 * c.dac_1b.area_um2;
    let col = arch.cols as f64 * c.column_buffer.area_um2
        + arch.adcs_per_crossbar as f64 * c.shift_add.area_um2;
    let center = if arch.correction == DigitalCorrection::Center {
        arch.macros_per_tile as f64 * (c.mul_area_um2(8.0, 16.0) + c.add_area_um2(32.0))
    } else {
        0.0
    };
    let shared = c.edram.area_um2
        + c.bus.width_bits * c.bus.area_um2_per_bit_width
        + c.router.area_um2 / arch.tiles_per_router as f64;
    Ok(TileArea {
        cells_um2: xbars * cells,
        adcs_um2: xbars * adcs,
        dacs_um2: xbars * dacs,
        column_periphery_um2: xbars * col,
        center_units_um2: center,
        tile_shared_um2: shared,
    })
}

/// One layer's place in the pipeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerPlacement {
    /// Crossbars of one copy of the layer.
    pub crossbars: usize,
    /// Crossbars of all its copies (packed copies share crossbars).
    pub crossbars_used: usize,
    /// Copies (replicated to balance the pipeline).
    pub replicas: usize,
    /// Time per inference with those copies, ns.
    pub time_ns: f64,
    /// Cell utilisation of one copy's crossbars.
    pub utilisation: f64,
}

/// A network mapped onto a chip (or several, if it does not fit one).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetworkPerf {
    /// Per layer.
    pub layers: Vec<LayerPlacement>,
    /// Crossbars available.
    pub crossbars_available: usize,
    /// Tiles used for the budget.
    pub tiles: usize,
    /// Area of those tiles, mm^2.
    pub area_mm2: f64,
    /// Pipelined throughput: inferences per second (set by the slowest layer).
    pub inferences_per_s: f64,
}

/// Crossbar cycle of `arch`: the longer of the analog cycle and the time its
/// ADCs need to convert every column.
#[must_use]
pub fn cycle_ns(arch: &CostArch, c: &Components) -> f64 {
    let convert = arch.cols as f64 / (arch.adcs_per_crossbar as f64 * c.adc.sample_rate_gsps);
    arch.cycle_ns.max(convert)
}

/// How recovery cycles are timed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum RecoveryTiming {
    /// Every recovery 1-bit slice is a full crossbar cycle (the paper's and
    /// AccelForge's RAELLA: 11 cycles per vector instead of 8).
    Fixed,
    /// A recovery slice lasts as long as its ADCs need for the flagged columns
    /// actually re-converted (spread evenly over the layer's crossbars), but
    /// never less than `floor_ns` (the analog read of a 1-bit slice).
    AdcBound {
        /// The shortest recovery slice, ns.
        floor_ns: f64,
    },
}

/// The mapping and timing assumptions of [`map_network`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MappingOptions {
    /// How recovery cycles are timed.
    pub recovery: RecoveryTiming,
    /// Replicas of a layer whose copy uses part of one crossbar are packed
    /// block-diagonally into the same crossbar (disjoint rows and columns, so
    /// they run at once) before new crossbars are taken.
    pub pack_replicas: bool,
}

impl Default for MappingOptions {
    /// The published model: fixed recovery cycles, packed replicas.
    fn default() -> Self {
        Self {
            recovery: RecoveryTiming::Fixed,
            pack_replicas: true,
        }
    }
}

/// Copies of one layer copy that fit in one crossbar (block-diagonally), or
/// `None` when a copy needs more than one crossbar.
fn copies_per_crossbar(arch: &CostArch, w: &LayerWork) -> Option<usize> {
    let s = &w.shape;
    let (rb, cb) = blocks(arch, s.rows, s.filters, w.weight_slices);
    (rb == 1 && cb == 1).then(|| {
        (arch.rows / s.rows.max(1))
            .min(arch.cols / (s.filters * w.weight_slices).max(1))
            .max(1)
    })
}

/// Crossbars holding `replicas` copies of a layer.
fn crossbars_for(arch: &CostArch, w: &LayerWork, replicas: usize, pack: bool) -> usize {
    let one = layer_crossbars(arch, &w.shape, w.weight_slices);
    match copies_per_crossbar(arch, w) {
        // Groups (and, when packing, replicas) share crossbars block-diagonally.
        Some(per) if pack => (w.shape.groups * replicas).div_ceil(per),
        _ => one * replicas,
    }
}

/// Time of one copy of a layer per inference, ns.
fn layer_time_ns(
    arch: &CostArch,
    w: &LayerWork,
    c: &Components,
    cyc: f64,
    opts: &MappingOptions,
) -> f64 {
    let s = &w.shape;
    let rec = w.recovery_cycles_per_vector;
    let primary = w.cycles_per_vector - rec;
    let recovery_ns = match opts.recovery {
        RecoveryTiming::Fixed => rec * cyc,
        RecoveryTiming::AdcBound { floor_ns } if rec > 0.0 => {
            let (rb, cb) = blocks(arch, s.rows, s.filters, w.weight_slices);
            let primary_conv = (s.filters * w.weight_slices * s.groups * rb) as f64
                * s.vectors
                * w.passes
                * primary;
            let rec_conv = (w.conversions - primary_conv).max(0.0);
            // Per vector and pass, on each crossbar of the copy, in parallel.
            let crossbars = (s.groups * rb * cb).max(1) as f64;
            let per_crossbar = rec_conv / (s.vectors * w.passes).max(1.0) / crossbars;
            let adc_ns = per_crossbar / (arch.adcs_per_crossbar as f64 * c.adc.sample_rate_gsps);
            adc_ns.max(rec * floor_ns)
        }
        RecoveryTiming::AdcBound { .. } => 0.0,
    };
    s.vectors * w.passes * (primary * cyc + recovery_ns)
}

/// Maps `works` onto `tiles` tiles of `arch`, replicating the slowest layer
/// while crossbars remain (weights stay resident; layers are pipelined).
///
/// # Errors
/// [`CostError::Missing`] when one copy of every layer does not fit.
pub fn map_network(
    works: &[LayerWork],
    arch: &CostArch,
    c: &Components,
    tiles: usize,
    opts: &MappingOptions,
) -> Result<NetworkPerf, CostError> {
    let available = tiles * arch.macros_per_tile * arch.crossbars_per_macro;
    let cyc = cycle_ns(arch, c);
    let mut layers: Vec<LayerPlacement> = works
        .iter()
        .map(|w| {
            let s = &w.shape;
            let crossbars = crossbars_for(arch, w, 1, opts.pack_replicas);
            let used = (s.groups * s.rows * s.filters * w.weight_slices) as f64;
            LayerPlacement {
                crossbars,
                crossbars_used: crossbars,
                replicas: 1,
                time_ns: layer_time_ns(arch, w, c, cyc, opts),
                utilisation: used / (crossbars * arch.rows * arch.cols) as f64,
            }
        })
        .collect();
    let base: Vec<f64> = layers.iter().map(|l| l.time_ns).collect();
    let mut used: usize = layers.iter().map(|l| l.crossbars).sum();
    if used > available {
        return Err(CostError::Missing(format!(
            "the network needs {used} crossbars; {tiles} tiles have {available}"
        )));
    }
    loop {
        let (i, slowest) = layers
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.time_ns.total_cmp(&b.1.time_ns))
            .map(|(i, l)| (i, l.clone()))
            .expect("at least one layer");
        let next = crossbars_for(arch, &works[i], slowest.replicas + 1, opts.pack_replicas);
        let extra = next - slowest.crossbars_used;
        // Replication cannot cut below one vector's cycles.
        if used + extra > available || slowest.replicas as f64 >= works[i].shape.vectors {
            break;
        }
        used += extra;
        let l = &mut layers[i];
        l.replicas += 1;
        l.crossbars_used = next;
        l.time_ns = base[i] / l.replicas as f64;
    }
    let slowest = layers.iter().map(|l| l.time_ns).fold(0.0, f64::max);
    let area_mm2 = tile_area(arch, c)?.total_um2() * tiles as f64 / 1e6;
    Ok(NetworkPerf {
        layers,
        crossbars_available: available,
        tiles,
        area_mm2,
        inferences_per_s: 1e9 / slowest.max(1e-9),
    })
}
