//! Which implementation computes the exact integer column sums of ideal
//! crossbars ([`crate::ProgrammedCrossbar::column_sums_int`]).
//!
//! All kernels give the same integers (integer arithmetic is exact; tested
//! byte for byte), so the choice changes speed, never a result. It is made at
//! run time, once per process: the fastest kernel this CPU runs, unless the
//! [`KERNEL_ENV`] environment variable names one. Naming a kernel the CPU
//! cannot run, or an unknown name, is an error ([`DeviceError::UnknownKernel`],
//! [`DeviceError::KernelUnsupported`]) rather than a silent fallback: a
//! researcher who forces a kernel gets that kernel or is told why not.
//! The vectorised conversion and bit-plane blocks (`blocks.rs`) follow the
//! same choice: their AVX-512 versions run under `amx` and `avx512vnni` only,
//! so `RAELLA_KERNEL=portable` runs every loop portably.
//!
//! The workspace builds for the architecture's baseline (no
//! `-C target-cpu=native`): a binary built on one machine runs on any other
//! of the architecture, and the feature tests below are real run-time checks.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use crate::DeviceError;

/// The environment variable that forces a kernel: `amx`, `avx512vnni`, `avx2`,
/// `portable`, or `auto` (the same as unset or empty: the fastest this CPU runs).
pub const KERNEL_ENV: &str = "RAELLA_KERNEL";

/// The instruction sets of [`Kernel::dispatch`] ([`Kernel::loop_set`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoopSet {
    /// AVX-512 F, BW, DQ, VL and VPOPCNTDQ (with the AVX2 set).
    Avx512,
    /// x86-64-v3's AVX2 set.
    Avx2,
    /// The architecture's baseline.
    Baseline,
}

/// An implementation of the exact `u8 x i8 -> i32` column sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// x86-64 AMX-INT8 tiles for crossbars of at least 64 rows (`tdpbusd`:
    /// 16 vectors x 64 rows x 16 columns per instruction) and AVX-512 VNNI
    /// for the rest (needs AMX-TILE, AMX-INT8, everything
    /// [`Kernel::Avx512Vnni`] needs, and Linux's permission to use the tile
    /// data, asked for once per process).
    Amx,
    /// x86-64 AVX-512 VNNI `vpdpbusd`: 64 multiply-adds per instruction
    /// (needs AVX-512F, AVX-512BW and AVX-512 VNNI).
    Avx512Vnni,
    /// x86-64 AVX2 `vpmaddubsw` + `vpmaddwd`: 32 multiply-adds per pair of
    /// instructions.
    Avx2,
    /// Plain Rust, any CPU.
    Portable,
}

impl Kernel {
    /// Every kernel, fastest first.
    pub const ALL: [Kernel; 4] = [
        Kernel::Amx,
        Kernel::Avx512Vnni,
        Kernel::Avx2,
        Kernel::Portable,
    ];

    /// The instruction set [`Self::dispatch`] compiles the engine's loops
    /// for under this kernel, where the CPU has it. One place for the
    /// mapping, matched exhaustively: a new kernel has to choose.
    pub(crate) fn loop_set(self) -> LoopSet {
        match self {
            Self::Amx | Self::Avx512Vnni => LoopSet::Avx512,
            Self::Avx2 => LoopSet::Avx2,
            Self::Portable => LoopSet::Baseline,
        }
    }

    /// The name [`KERNEL_ENV`] takes.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Amx => "amx",
            Self::Avx512Vnni => "avx512vnni",
            Self::Avx2 => "avx2",
            Self::Portable => "portable",
        }
    }

    /// Whether this CPU runs the kernel (detected at run time).
    #[must_use]
    pub fn supported(self) -> bool {
        match self {
            Self::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Self::Avx512Vnni => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "x86_64")]
            Self::Amx => Self::Avx512Vnni.supported() && crate::packed::amx_permitted(),
            #[cfg(not(target_arch = "x86_64"))]
            Self::Amx | Self::Avx2 | Self::Avx512Vnni => false,
        }
    }

    /// The kernels this CPU runs, fastest first.
    #[must_use]
    pub fn supported_kernels() -> Vec<Kernel> {
        Self::ALL.into_iter().filter(|k| k.supported()).collect()
    }

    /// The kernel column sums use in this process: [`KERNEL_ENV`] if set,
    /// else the fastest supported. Decided on the first call and cached.
    ///
    /// # Errors
    /// [`DeviceError::UnknownKernel`] or [`DeviceError::KernelUnsupported`]
    /// for a bad [`KERNEL_ENV`] (every call returns the same error).
    pub fn selected() -> Result<Kernel, DeviceError> {
        static SELECTED: OnceLock<Result<Kernel, DeviceError>> = OnceLock::new();
        SELECTED
            .get_or_init(|| {
                let value = std::env::var(KERNEL_ENV).ok();
                Self::choose(value.as_deref(), &Self::supported_kernels())
            })
            .clone()
    }

    /// The kernel for a [`KERNEL_ENV`] value on a CPU that runs `supported`
    /// (fastest first, `portable` always among them).
    ///
    /// # Errors
    /// An unknown name, or a kernel not in `supported`.
    pub fn choose(value: Option<&str>, supported: &[Kernel]) -> Result<Kernel, DeviceError> {
        let best = supported.first().copied().unwrap_or(Self::Portable);
        let value = value.map(str::trim).unwrap_or("");
        if value.is_empty() || value.eq_ignore_ascii_case("auto") {
            return Ok(best);
        }
        let kernel: Kernel = value.parse()?;
        if !supported.contains(&kernel) {
            return Err(DeviceError::KernelUnsupported {
                variable: KERNEL_ENV,
                kernel: kernel.name(),
                supported: supported
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(kernel)
    }
}

/// Features the engine's loops are compiled for under [`Kernel::dispatch`]:
/// AVX-512 with vector popcounts (the level-plane reads of recovery), and
/// x86-64-v3's AVX2 set. Results never depend on them: integer arithmetic is
/// exact, and Rust never contracts or reassociates `f32` operations.
#[cfg(target_arch = "x86_64")]
mod loops {
    /// Every feature of [`avx512`]'s list.
    pub(super) fn avx512_detected() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512vpopcntdq")
            && avx2_detected()
    }

    /// Every feature of [`avx2`]'s list.
    pub(super) fn avx2_detected() -> bool {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("bmi1")
            && std::arch::is_x86_feature_detected!("bmi2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("lzcnt")
            && std::arch::is_x86_feature_detected!("popcnt")
    }

    /// Runs `f` inlined into a function compiled for the AVX-512 set (itself
    /// never inlined, so each dispatched closure is a function of its own).
    #[target_feature(
        enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vpopcntdq,avx2,bmi1,bmi2,fma,lzcnt,popcnt"
    )]
    #[inline(never)]
    pub(super) fn avx512<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    /// Runs `f` inlined into a function compiled for the AVX2 set (as
    /// [`avx512`], never inlined itself).
    #[target_feature(enable = "avx2,bmi1,bmi2,fma,lzcnt,popcnt")]
    #[inline(never)]
    pub(super) fn avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
}

impl Kernel {
    /// [`Kernel::dispatch`] under the process's kernel ([`Kernel::selected`]),
    /// or the portable one when [`KERNEL_ENV`] is invalid (code off the
    /// engine's checked path: the build, the reference, the sampled check;
    /// the engine reports that error). Mark `f` `#[inline(always)]`.
    #[inline(always)]
    pub fn dispatch_selected<R>(f: impl FnOnce() -> R) -> R {
        Self::selected().unwrap_or(Self::Portable).dispatch(f)
    }

    /// Runs `f` compiled for the instruction set that goes with this kernel,
    /// where the CPU has it: the AVX-512 set (F, BW, DQ, VL, VPOPCNTDQ) for
    /// `amx` and `avx512vnni` (else the AVX2 set), x86-64-v3's AVX2 set (AVX2, BMI1/2,
    /// FMA, LZCNT, POPCNT) for `avx2`, the baseline for `portable`. Code
    /// reaches the wider set only where it is inlined into `f` (mark the hot
    /// functions it calls `#[inline(always)]`); the results are the same on
    /// every set. This is how the engine's plain-Rust loops get the vector
    /// units without `-C target-cpu=native`.
    #[inline(always)]
    pub fn dispatch<R>(self, f: impl FnOnce() -> R) -> R {
        #[cfg(target_arch = "x86_64")]
        {
            static AVX512: OnceLock<bool> = OnceLock::new();
            static AVX2: OnceLock<bool> = OnceLock::new();
            let avx512 = || *AVX512.get_or_init(loops::avx512_detected);
            let avx2 = || *AVX2.get_or_init(loops::avx2_detected);
            let wide = match self.loop_set() {
                LoopSet::Avx512 if avx512() => Some(true),
                LoopSet::Avx512 | LoopSet::Avx2 if avx2() => Some(false),
                _ => None,
            };
            // One of the workspace's target-feature unsafe blocks (the others
            // call the x86 kernels in `packed.rs` and the blocks in `blocks.rs`):
            // calling a function compiled for features the baseline target
            // lacks, after detecting them.
            #[allow(unsafe_code)]
            // SAFETY: `avx512_detected` / `avx2_detected` found every feature in
            // the function's `target_feature` list on this CPU at run time. The
            // functions only call `f`, which is safe code.
            match wide {
                Some(true) => return unsafe { loops::avx512(f) },
                Some(false) => return unsafe { loops::avx2(f) },
                None => {}
            }
        }
        f()
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kernel {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| DeviceError::UnknownKernel {
                variable: KERNEL_ENV,
                value: s.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_variable_picks_or_refuses_a_kernel() {
        let all = Kernel::ALL;
        let old = [Kernel::Avx2, Kernel::Portable];
        for unset in [None, Some(""), Some("auto"), Some(" AUTO ")] {
            assert_eq!(Kernel::choose(unset, &all), Ok(Kernel::Amx));
            assert_eq!(Kernel::choose(unset, &all[1..]), Ok(Kernel::Avx512Vnni));
            assert_eq!(Kernel::choose(unset, &old), Ok(Kernel::Avx2));
            assert_eq!(
                Kernel::choose(unset, &[Kernel::Portable]),
                Ok(Kernel::Portable)
            );
        }
        for k in all {
            assert_eq!(Kernel::choose(Some(k.name()), &all), Ok(k));
            assert_eq!(k.name().parse::<Kernel>(), Ok(k));
        }
        assert_eq!(Kernel::choose(Some("avx2"), &old), Ok(Kernel::Avx2));
        let err = Kernel::choose(Some("avx512vnni"), &old).unwrap_err();
        assert_eq!(
            err.to_string(),
            "RAELLA_KERNEL=avx512vnni forces a kernel this CPU cannot run; it runs: avx2, portable"
        );
        let err = Kernel::choose(Some("avx512"), &all).unwrap_err();
        assert!(matches!(err, DeviceError::UnknownKernel { .. }));
        assert!(
            err.to_string().contains("avx512vnni, avx2, portable"),
            "{err}"
        );
        assert_eq!(Kernel::supported_kernels().last(), Some(&Kernel::Portable));
    }
}
