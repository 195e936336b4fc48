//! Run-time device selection. Backends are compiled in by cargo feature; the device is
//! picked from a string such as `cpu`, `wgpu:0` or `tch:cuda:0`.

use std::fmt;
use std::str::FromStr;

use burn::tensor::{Device, DeviceConfig, FloatDType};

use crate::error::{LumenError, Result};

/// A parsed device string. Parsing never depends on which backends were compiled
/// in; turning a spec into a [`Device`] does, and fails with the feature to enable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    /// Pure-Rust CPU backend (burn-flex). Spelled `cpu` or `flex`.
    Flex,
    /// Portable GPU backend (wgpu: Vulkan, Metal, DX12); `None` picks the best adapter.
    Wgpu(Option<usize>),
    /// libtorch on the CPU.
    TchCpu,
    /// libtorch on CUDA device N.
    TchCuda(usize),
    /// Burn's CubeCL CUDA backend on device N.
    Cuda(usize),
    /// burn-ndarray on the CPU (feature `ndarray`, or `ndarray-blas` with OpenBLAS).
    NdArray,
}

impl DeviceSpec {
    /// The cargo feature that compiles this backend in.
    pub fn feature(&self) -> &'static str {
        match self {
            Self::Flex => "flex",
            Self::Wgpu(_) => "wgpu",
            Self::TchCpu | Self::TchCuda(_) => "tch",
            Self::Cuda(_) => "cuda",
            Self::NdArray => "ndarray",
        }
    }

    /// Whether the backend of this spec was compiled into this build.
    pub fn is_compiled(&self) -> bool {
        compiled_features().contains(&self.feature())
    }

    /// Create the device (without autodiff). Fails when the backend is not compiled in,
    /// or when this machine lacks the device (a GPU index past the last one, no
    /// driver), so that a bad `--device` is an error here instead of a panic inside
    /// the backend at the first tensor.
    pub fn device(&self) -> Result<Device> {
        if !self.is_compiled() {
            return Err(LumenError::BackendNotCompiled {
                spec: self.to_string(),
                feature: self.feature(),
            });
        }
        self.create()
    }

    #[cfg(any(feature = "wgpu", feature = "tch"))]
    fn unavailable(&self, reason: impl Into<String>) -> LumenError {
        LumenError::DeviceUnavailable {
            spec: self.to_string(),
            reason: reason.into(),
        }
    }

    #[allow(unreachable_code, unused_variables)]
    fn create(&self) -> Result<Device> {
        Ok(match self {
            #[cfg(feature = "flex")]
            Self::Flex => Device::flex(),
            #[cfg(feature = "wgpu")]
            Self::Wgpu(index) => return self.wgpu(*index),
            // Burn 0.22 deprecates burn-tch; it is still the fast GPU path
            // (docs/performance.md).
            #[cfg(feature = "tch")]
            #[allow(deprecated)]
            Self::TchCpu => Device::libtorch(),
            #[cfg(feature = "tch")]
            Self::TchCuda(index) => {
                // libtorch answers 0 (not an error) without a driver or in a CPU-only
                // build; Burn would panic at the first tensor instead.
                let count = usize::try_from(tch::Cuda::device_count()).unwrap_or(0);
                if *index >= count {
                    return Err(self.unavailable(match count {
                        0 => "libtorch finds no CUDA device (no NVIDIA driver, or a CPU-only \
                              libtorch); use tch:cpu or cpu"
                            .to_string(),
                        1 => "libtorch finds one CUDA device: tch:cuda:0".to_string(),
                        n => format!(
                            "libtorch finds {n} CUDA devices: tch:cuda:0 to tch:cuda:{}",
                            n - 1
                        ),
                    }));
                }
                #[allow(deprecated)]
                Device::libtorch_cuda(*index)
            }
            #[cfg(feature = "cuda")]
            Self::Cuda(index) => Device::cuda(*index),
            #[cfg(feature = "ndarray")]
            // Deprecated in Burn 0.22 in favour of flex; kept to measure against it.
            #[allow(deprecated)]
            Self::NdArray => Device::ndarray(),
            #[allow(unreachable_patterns)]
            _ => unreachable!("device() checks is_compiled() first"),
        })
    }

    /// A wgpu device, acquired now: Burn acquires it lazily, at the first tensor, and
    /// panics there when no adapter fits (`wgpu:3` on a one-GPU machine, no Vulkan
    /// driver). Acquiring through Burn's fallible initialisation turns that into an
    /// error; a device already acquired in this process (by an earlier call, or by
    /// Burn itself) is reused as it is.
    #[cfg(feature = "wgpu")]
    fn wgpu(&self, index: Option<usize>) -> Result<Device> {
        use std::sync::Mutex;

        use burn::tensor::DeviceKind;
        use burn::tensor::wgpu::WgpuInitError;

        static ACQUIRED: Mutex<Vec<Option<usize>>> = Mutex::new(Vec::new());
        let kind = match index {
            Some(i) => DeviceKind::DiscreteGpu(i),
            None => DeviceKind::DefaultDevice,
        };
        // Held through the acquisition, so that two threads asking for the same new
        // device do not both acquire it.
        let mut acquired = ACQUIRED.lock().unwrap_or_else(|e| e.into_inner());
        if acquired.contains(&index) {
            return Ok(Device::wgpu(kind));
        }
        match Device::wgpu_options().device_kind(kind.clone()).init() {
            // Registration fails when the runtime of this selector exists already.
            Ok(_) | Err(WgpuInitError::Registration { .. }) => {
                acquired.push(index);
                Ok(Device::wgpu(kind))
            }
            Err(e) => Err(self.unavailable(match index {
                Some(_) => format!(
                    "{e} (`wgpu:N` counts discrete GPUs from 0; `wgpu` takes the default adapter)"
                ),
                None => e.to_string(),
            })),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = LumenError;

    fn from_str(spec: &str) -> Result<Self> {
        let unknown = || LumenError::UnknownDevice {
            spec: spec.to_string(),
        };
        let index = |s: &str| s.parse::<usize>().map_err(|_| unknown());
        let lower = spec.trim().to_ascii_lowercase();
        let parts: Vec<&str> = lower.split(':').collect();
        match parts.as_slice() {
            ["cpu"] | ["flex"] => Ok(Self::Flex),
            ["wgpu"] => Ok(Self::Wgpu(None)),
            ["wgpu", n] => Ok(Self::Wgpu(Some(index(n)?))),
            ["tch"] | ["tch", "cpu"] => Ok(Self::TchCpu),
            ["tch", "cuda"] => Ok(Self::TchCuda(0)),
            ["tch", "cuda", n] => Ok(Self::TchCuda(index(n)?)),
            ["cuda"] => Ok(Self::Cuda(0)),
            ["cuda", n] => Ok(Self::Cuda(index(n)?)),
            ["ndarray"] => Ok(Self::NdArray),
            _ => Err(unknown()),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flex => write!(f, "cpu"),
            Self::Wgpu(None) => write!(f, "wgpu"),
            Self::Wgpu(Some(i)) => write!(f, "wgpu:{i}"),
            Self::TchCpu => write!(f, "tch:cpu"),
            Self::TchCuda(i) => write!(f, "tch:cuda:{i}"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
            Self::NdArray => write!(f, "ndarray"),
        }
    }
}

/// Parse a device string and create the device (without autodiff).
pub fn device_from_str(spec: &str) -> Result<Device> {
    spec.parse::<DeviceSpec>()?.device()
}

/// The backend features compiled into this build, in preference order.
pub fn compiled_features() -> &'static [&'static str] {
    &[
        #[cfg(feature = "flex")]
        "flex",
        #[cfg(feature = "wgpu")]
        "wgpu",
        #[cfg(feature = "tch")]
        "tch",
        #[cfg(feature = "cuda")]
        "cuda",
        #[cfg(feature = "ndarray")]
        "ndarray",
    ]
}

/// The device used when the caller names none: the first compiled backend, CPU first
/// so that results never depend on which GPU happens to be present.
pub fn default_device() -> Result<Device> {
    let spec = match compiled_features().first() {
        Some(&"flex") => DeviceSpec::Flex,
        Some(&"wgpu") => DeviceSpec::Wgpu(None),
        Some(&"tch") => DeviceSpec::TchCpu,
        Some(&"cuda") => DeviceSpec::Cuda(0),
        Some(&"ndarray") => DeviceSpec::NdArray,
        _ => {
            return Err(LumenError::InvalidArgument(
                "no backend compiled in: enable one of the features flex, wgpu, tch, cuda".into(),
            ));
        }
    };
    spec.device()
}

/// The same device with gradients enabled: inputs created on it can be differentiated.
pub fn with_gradients(device: &Device) -> Device {
    device.clone().autodiff()
}

/// The floating-point type a device computes in. `F16` and `BF16` halve the memory
/// and bandwidth of activations and weights, which pays on GPUs with half-precision
/// units; the maps' distance from float32's is in `docs/performance.md` ("Half
/// precision").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// IEEE float32: what the reference libraries compute in.
    #[default]
    F32,
    /// IEEE float16 (5 exponent bits: range to 65504, 11 significant bits).
    F16,
    /// bfloat16 (float32's range, 8 significant bits).
    BF16,
}

impl Precision {
    /// The name the command line takes and the JSON outputs print: f32, f16 or bf16.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::BF16 => "bf16",
        }
    }

    /// Burn's float type for this precision.
    pub fn dtype(self) -> FloatDType {
        match self {
            Self::F32 => FloatDType::F32,
            Self::F16 => FloatDType::F16,
            Self::BF16 => FloatDType::BF16,
        }
    }

    /// The precision a device computes in now (float32 unless set).
    pub fn of(device: &Device) -> Option<Self> {
        match device.settings().float_dtype {
            FloatDType::F32 => Some(Self::F32),
            FloatDType::F16 => Some(Self::F16),
            FloatDType::BF16 => Some(Self::BF16),
            _ => None,
        }
    }
}

impl FromStr for Precision {
    type Err = LumenError;

    fn from_str(text: &str) -> Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Self::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::BF16),
            _ => Err(LumenError::InvalidArgument(format!(
                "unknown precision `{text}`: use f32, f16 or bf16"
            ))),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Make every float tensor created on `device` from now on (weights the zoo loads,
/// inputs, noise, masks) use `precision`; results read back to the host are float32.
/// Burn fixes a device's types for the whole process when the first tensor is
/// created on it, so call this first: asking again for the precision it already has
/// is fine, asking for another one is an error.
pub fn set_precision(device: &mut Device, precision: Precision) -> Result<()> {
    let current = Precision::of(device);
    if current == Some(precision) && precision == Precision::F32 {
        return Ok(());
    }
    match device.configure(DeviceConfig::default().float_dtype(precision.dtype())) {
        Ok(()) => Ok(()),
        Err(_) if Precision::of(device) == Some(precision) => Ok(()),
        Err(e) => Err(LumenError::InvalidArgument(format!(
            "cannot compute in {precision} on this device: {e} (a device's precision is \
             fixed once the first tensor is created on it; it computes in {})",
            current.map_or_else(
                || format!("{:?}", device.settings().float_dtype),
                |p| p.to_string()
            )
        ))),
    }
}

/// [`device_from_str`], computing in `precision`.
pub fn device_with_precision(spec: &str, precision: Precision) -> Result<Device> {
    let mut device = device_from_str(spec)?;
    set_precision(&mut device, precision)?;
    Ok(device)
}

/// Seed the device's random number generator (noise, random baselines, masks).
pub fn seed(device: &Device, seed: u64) {
    device.seed(seed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_spelling() {
        let cases = [
            ("cpu", DeviceSpec::Flex),
            ("flex", DeviceSpec::Flex),
            ("wgpu", DeviceSpec::Wgpu(None)),
            ("wgpu:1", DeviceSpec::Wgpu(Some(1))),
            ("tch:cpu", DeviceSpec::TchCpu),
            ("tch:cuda:0", DeviceSpec::TchCuda(0)),
            ("TCH:CUDA:3", DeviceSpec::TchCuda(3)),
            ("cuda:2", DeviceSpec::Cuda(2)),
            ("ndarray", DeviceSpec::NdArray),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<DeviceSpec>().unwrap(), expected, "{text}");
        }
        assert_eq!(DeviceSpec::TchCuda(3).to_string(), "tch:cuda:3");
    }

    #[test]
    fn unknown_device_is_an_error_listing_valid_forms() {
        for bad in ["gpu", "wgpu:x", "tch:cuda:-1", "", "cuda:0:1"] {
            let err = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(err.contains("unknown device"), "{bad}: {err}");
            assert!(err.contains("tch:cuda:N"), "{bad}: {err}");
        }
    }

    #[test]
    fn backend_not_compiled_names_the_feature() {
        // `cuda` is never part of the default or CI build.
        if DeviceSpec::Cuda(0).is_compiled() {
            return;
        }
        let err = device_from_str("cuda:0").unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }

    #[test]
    fn precision_spellings_parse_and_unknown_ones_are_refused() {
        for (text, expected) in [
            ("f32", Precision::F32),
            ("FP16", Precision::F16),
            ("half", Precision::F16),
            ("bfloat16", Precision::BF16),
        ] {
            assert_eq!(text.parse::<Precision>().unwrap(), expected, "{text}");
        }
        assert_eq!(Precision::BF16.to_string(), "bf16");
        let err = "f8".parse::<Precision>().unwrap_err().to_string();
        assert!(err.contains("use f32, f16 or bf16"), "{err}");
    }

    #[cfg(feature = "flex")]
    #[test]
    fn cpu_device_is_created_and_autodiff_wraps_it() {
        let device = device_from_str("cpu").unwrap();
        assert!(!device.is_autodiff());
        assert!(with_gradients(&device).is_autodiff());
    }
}
