//! Peak throughput of the GPUs llmrs is meant for, so a step's speed can be read as a fraction of what the
//! hardware could do (model FLOPs utilisation, MFU) and a kernel's as a fraction of memory bandwidth.
//!
//! Numbers are the vendors' dense (no sparsity) peaks at boost clock, as llm.c's mfu.h uses them. "bf16" is the
//! tensor-core rate with fp32 accumulation, which is what mixed-precision training runs at; on GeForce cards that
//! is half the fp16-accumulate rate the marketing quotes. fp32 is the CUDA-core rate (cuBLAS sgemm without TF32).

/// One GPU's peaks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DevicePeak {
    /// Matched against the device name the driver reports (first match wins, so specific names come first).
    pub name: &'static str,
    /// TFLOP/s on CUDA cores in fp32.
    pub fp32_tflops: f64,
    /// TFLOP/s on tensor cores, bf16 inputs with fp32 accumulation, dense.
    pub bf16_tflops: f64,
    /// GB/s of device memory.
    pub memory_gbps: f64,
}

/// Known GPUs, most specific names first.
pub const PEAKS: &[DevicePeak] = &[
    DevicePeak { name: "RTX 4070 Ti SUPER", fp32_tflops: 44.1, bf16_tflops: 88.2, memory_gbps: 672.0 },
    DevicePeak { name: "RTX 4070 Ti", fp32_tflops: 40.1, bf16_tflops: 80.2, memory_gbps: 504.0 },
    DevicePeak { name: "RTX 4070 SUPER", fp32_tflops: 35.5, bf16_tflops: 71.0, memory_gbps: 504.0 },
    DevicePeak { name: "RTX 4070", fp32_tflops: 29.1, bf16_tflops: 58.3, memory_gbps: 504.0 },
    DevicePeak { name: "RTX 4090", fp32_tflops: 82.6, bf16_tflops: 165.2, memory_gbps: 1008.0 },
    DevicePeak { name: "RTX 3090", fp32_tflops: 35.6, bf16_tflops: 71.0, memory_gbps: 936.0 },
    DevicePeak { name: "A100-SXM4-80GB", fp32_tflops: 19.5, bf16_tflops: 312.0, memory_gbps: 2039.0 },
    DevicePeak { name: "A100", fp32_tflops: 19.5, bf16_tflops: 312.0, memory_gbps: 1555.0 },
    DevicePeak { name: "H100 PCIe", fp32_tflops: 51.2, bf16_tflops: 756.5, memory_gbps: 2000.0 },
    DevicePeak { name: "H100", fp32_tflops: 66.9, bf16_tflops: 989.4, memory_gbps: 3350.0 },
    DevicePeak { name: "H200", fp32_tflops: 66.9, bf16_tflops: 989.4, memory_gbps: 4800.0 },
];

/// The peaks of the device called `device` ("cuda (NVIDIA H200, sm_90)" or the bare GPU name), if known.
pub fn lookup(device: &str) -> Option<&'static DevicePeak> {
    PEAKS.iter().find(|p| device.contains(p.name))
}

/// Model FLOPs utilisation: `flops_per_sec` achieved over the peak of the precision the run computes in.
pub fn mfu(peak: &DevicePeak, flops_per_sec: f64, bf16: bool) -> f64 {
    let tflops = if bf16 { peak.bf16_tflops } else { peak.fp32_tflops };
    flops_per_sec / (tflops * 1e12)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specific_names_win_over_their_prefixes() {
        assert_eq!(lookup("cuda (NVIDIA GeForce RTX 4070 Ti, sm_89)").unwrap().name, "RTX 4070 Ti");
        assert_eq!(lookup("cuda (NVIDIA GeForce RTX 4070, sm_89)").unwrap().name, "RTX 4070");
        assert_eq!(lookup("NVIDIA H100 PCIe").unwrap().name, "H100 PCIe");
        assert_eq!(lookup("NVIDIA H100 80GB HBM3").unwrap().name, "H100");
        assert_eq!(lookup("cuda (NVIDIA H200, sm_90)").unwrap().name, "H200");
        assert!(lookup("cpu (2 threads)").is_none());
    }

    #[test]
    fn mfu_is_achieved_over_peak() {
        let h200 = lookup("H200").unwrap();
        assert!((mfu(h200, 494.7e12, true) - 0.5).abs() < 1e-3);
        assert!((mfu(h200, 6.69e12, false) - 0.1).abs() < 1e-3);
    }
}
