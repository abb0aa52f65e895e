//! Build script: compiles the CUDA kernels in kernels/ two ways, each behind a feature.
//!
//! - `cuda`: nvcc builds one fat binary per kernel file (cubin for each target arch plus PTX for the newest, so
//!   a later GPU can JIT it) that the binary embeds. Archs come from CUDA_COMPUTE_CAP ("89,90"), else from
//!   nvidia-smi, else sm_89 (RTX 4070) and sm_90 (H100/H200). ptxas's register report is written to
//!   OUT_DIR/ptxas_report.txt and any register spill fails the build.
//! - `emu`: the host C++ compiler builds the same files against dev/emu (each CUDA thread a fiber), with a
//!   generated dispatcher that finds a kernel by name and unpacks cuLaunchKernel-style arguments into its
//!   parameter types, so tests run every kernel on machines without a GPU.
//!
//! Without either feature nothing here needs CUDA or a C++ compiler.

use std::path::{Path, PathBuf};

/// The precisions every kernel file is compiled for: (name, the macro that selects it). kernels/common.cuh makes
/// `floatX` float, or bf16 under LLMRS_BF16.
#[allow(dead_code)]
const PRECISIONS: &[(&str, Option<&str>)] = &[("f32", None), ("bf16", Some("LLMRS_BF16"))];

/// One kernel file and the `extern "C" __global__` entry points it defines.
#[allow(dead_code)]
struct KernelFile {
    stem: String,
    path: PathBuf,
    kernels: Vec<String>,
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-changed=dev/emu");
    for var in ["NVCC", "CUDA_HOME", "CUDA_PATH", "CUDA_COMPUTE_CAP", "PATH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let files = scan_kernel_files(Path::new("kernels"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    #[cfg(feature = "emu")]
    emu::build(&files, &out_dir);
    #[cfg(feature = "cuda")]
    cuda::build(&files, &out_dir);
    let _ = (&files, &out_dir);
}

/// Every kernels/*.cu with the names of its entry points, sorted by file name.
fn scan_kernel_files(dir: &Path) -> Vec<KernelFile> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut paths: Vec<PathBuf> =
        entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|e| e == "cu")).collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let source =
                std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            KernelFile {
                stem: path.file_stem().unwrap().to_string_lossy().into_owned(),
                kernels: entry_points(&source),
                path,
            }
        })
        .collect()
}

/// Names of the `extern "C" __global__ void [__launch_bounds__(...)] NAME(` functions in `source`.
fn entry_points(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find("extern \"C\"") {
        rest = &rest[at + "extern \"C\"".len()..];
        let Some(after_global) = rest.trim_start().strip_prefix("__global__") else { continue };
        let Some(mut after_void) = after_global.trim_start().strip_prefix("void") else { continue };
        after_void = after_void.trim_start();
        if let Some(bounds) = after_void.strip_prefix("__launch_bounds__") {
            let close = bounds.find(')').expect("__launch_bounds__( without )");
            after_void = bounds[close + 1..].trim_start();
        }
        let name: String = after_void.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if !name.is_empty() {
            names.push(name);
        }
    }
    names
}

#[cfg(feature = "emu")]
mod emu {
    use super::KernelFile;
    use std::fmt::Write;
    use std::path::Path;

    /// Compiles every kernel file against dev/emu into one static library exporting `llmrs_emu_launch`.
    pub fn build(files: &[KernelFile], out_dir: &Path) {
        let root = std::env::current_dir().expect("build scripts run in the package root");
        let mut build = cc::Build::new();
        build
            .cpp(true)
            .std("c++17")
            .include(root.join("dev/emu/include"))
            .include(root.join("dev/emu"))
            .include(root.join("kernels"))
            .define("LLMRS_EMU", None)
            .opt_level(2)
            .flag_if_supported("-Wno-unused-parameter")
            .flag_if_supported("-Wno-unused-function");
        if std::env::var("LLMRS_EMU_ASAN").is_ok_and(|v| v == "1") {
            build.flag("-fsanitize=address").flag("-fno-omit-frame-pointer").define("EMU_ASAN", None);
        }
        let mut dispatch = String::from("#include <cstddef>\n");
        let mut calls = String::new();
        for file in files {
            let text = std::fs::read_to_string(&file.path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.path.display()));
            for &(precision, define) in super::PRECISIONS {
                // One translation unit per kernel file and precision, as nvcc compiles them, so file-local helpers
                // cannot clash. The two precisions define the same kernel names, so the unit holds the source with
                // its entry points made file-local (`static`) and a per-unit launcher finds them; `#line` keeps the
                // emulator's reports pointing at the real file and line.
                let unit_name = format!("{}_{precision}", file.stem);
                let unit = out_dir.join(format!("emu_{unit_name}.cpp"));
                let mut source = String::from("#include \"cuda_emu.h\"\n#include <cstring>\n");
                if let Some(define) = define {
                    let _ = writeln!(source, "#define {define} 1");
                }
                let _ = writeln!(source, "#line 1 \"{}\"", root.join(&file.path).display());
                source.push_str(&text.replace("extern \"C\" __global__", "static __global__"));
                let _ = writeln!(
                    source,
                    "\nextern \"C\" int llmrs_emu_launch_{unit_name}(const char* name, dim3 grid, dim3 block, \
                     size_t smem, void** args, char* err, size_t err_len) {{"
                );
                for kernel in &file.kernels {
                    let _ = writeln!(
                        source,
                        "    if (std::strcmp(name, \"{kernel}\") == 0) return ::emu::launch_packed(name, {kernel}, \
                         grid, block, smem, args, err, err_len);"
                    );
                }
                source.push_str("    return -1;\n}\n");
                std::fs::write(&unit, source).expect("write emulator unit");
                build.file(&unit);
                let _ = writeln!(
                    dispatch,
                    "struct dim3;\nextern \"C\" int llmrs_emu_launch_{unit_name}(const char*, dim3, dim3, size_t, \
                     void**, char*, size_t);"
                );
                let _ = writeln!(
                    calls,
                    "    if (std::strcmp(precision, \"{precision}\") == 0 && (rc = llmrs_emu_launch_{unit_name}(name, \
                     grid, block, smem, args, err, err_len)) != -1) return rc;"
                );
            }
        }
        // The dispatcher sees dim3 only by reference through the emulator header.
        let dispatch = format!(
            "#include \"cuda_emu.h\"\n#include <cstdio>\n#include <cstring>\n{}\nextern \"C\" int \
             llmrs_emu_launch(const char* name, const char* precision, unsigned gx, unsigned gy, unsigned gz, \
             unsigned bx, unsigned by, unsigned bz, size_t smem, void** args, char* err, size_t err_len) {{\n    \
             dim3 grid(gx, gy, gz), block(bx, by, bz);\n    int rc;\n{}    std::snprintf(err, err_len, \"no kernel \
             named %s (%s) in kernels/\", name, precision);\n    return 1;\n}}\n",
            dispatch.replace("struct dim3;\n", ""),
            calls
        );
        let dispatch_path = out_dir.join("emu_dispatch.cpp");
        std::fs::write(&dispatch_path, dispatch).expect("write emulator dispatcher");
        build.file(&dispatch_path);
        build.compile("llmrs_emu_kernels");
        println!("cargo:rustc-link-lib=pthread");
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::KernelFile;
    use std::fmt::Write;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    const HOW_TO_GET_NVCC: &str = "the `cuda` feature compiles kernels/*.cu with nvcc, and none was found \
        (looked at $NVCC, PATH, $CUDA_HOME/bin, $CUDA_PATH/bin, /usr/local/cuda/bin). Install the CUDA toolkit, \
        or get nvcc from PyPI: python3 -m venv ~/.cache/llmrs/cuda13-venv && ~/.cache/llmrs/cuda13-venv/bin/pip \
        install \"nvidia-cuda-nvcc==13.0.*\" \"nvidia-nvvm==13.0.*\" \"nvidia-cuda-crt==13.0.*\" \
        \"nvidia-cuda-runtime==13.0.*\" \"nvidia-cuda-cccl==13.0.*\" (all pinned to one release), then set \
        NVCC to its site-packages/nvidia/cu13/bin/nvcc. Or build without --features cuda.";

    fn find_nvcc() -> PathBuf {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Ok(nvcc) = std::env::var("NVCC") {
            candidates.push(nvcc.into());
        }
        if let Ok(path) = std::env::var("PATH") {
            candidates.extend(std::env::split_paths(&path).map(|dir| dir.join("nvcc")));
        }
        for var in ["CUDA_HOME", "CUDA_PATH"] {
            if let Ok(home) = std::env::var(var) {
                candidates.push(Path::new(&home).join("bin/nvcc"));
            }
        }
        candidates.push("/usr/local/cuda/bin/nvcc".into());
        candidates.into_iter().find(|p| p.is_file()).unwrap_or_else(|| panic!("{HOW_TO_GET_NVCC}"))
    }

    /// Compute capabilities to build for, e.g. [89, 90].
    fn target_archs() -> Vec<u32> {
        let parse = |list: &str| -> Vec<u32> {
            list.split([',', ' ', '\n'])
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().replace('.', "").parse().unwrap_or_else(|_| panic!("bad compute capability {s:?}")))
                .collect()
        };
        if let Ok(list) = std::env::var("CUDA_COMPUTE_CAP") {
            return parse(&list);
        }
        let detected = Command::new("nvidia-smi")
            .args(["--query-gpu=compute_cap", "--format=csv,noheader"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| parse(&String::from_utf8_lossy(&o.stdout)));
        match detected {
            Some(mut archs) if !archs.is_empty() => {
                archs.sort();
                archs.dedup();
                archs
            }
            _ => vec![89, 90],
        }
    }

    /// Builds one fat binary per kernel file and a Rust table embedding them.
    pub fn build(files: &[KernelFile], out_dir: &Path) {
        let nvcc = find_nvcc();
        let archs = target_archs();
        let newest = *archs.iter().max().expect("at least one arch");
        let mut report = String::new();
        let mut table = String::from(
            "/// (kernel file, precision, fat binary) for every kernels/*.cu in each precision.\n\
             pub const FATBINS: &[(&str, &str, &[u8])] = &[\n",
        );
        let mut names =
            String::from("/// (kernel, kernel file) for every entry point.\npub const KERNELS: &[(&str, &str)] = &[\n");
        for file in files {
            for &(precision, define) in super::PRECISIONS {
                let out = out_dir.join(format!("{}.{precision}.fatbin", file.stem));
                let mut cmd = Command::new(&nvcc);
                cmd.arg("-fatbin").arg("-O3").arg("-std=c++17").arg("-Xptxas").arg("-v").arg("-Ikernels");
                if let Some(define) = define {
                    cmd.arg(format!("-D{define}"));
                }
                for arch in &archs {
                    cmd.arg(format!("-gencode=arch=compute_{arch},code=sm_{arch}"));
                }
                cmd.arg(format!("-gencode=arch=compute_{newest},code=compute_{newest}"));
                cmd.arg(&file.path).arg("-o").arg(&out);
                let output = cmd.output().unwrap_or_else(|e| panic!("cannot run {}: {e}", nvcc.display()));
                let stderr = String::from_utf8_lossy(&output.stderr);
                if !output.status.success() {
                    panic!("nvcc failed on {} ({precision}):\n{stderr}", file.path.display());
                }
                let _ = writeln!(report, "== {} ({precision})\n{stderr}", file.path.display());
                for line in stderr.lines().filter(|l| l.contains("spill")) {
                    if !line.contains("0 bytes spill stores, 0 bytes spill loads") {
                        panic!(
                            "register spill in {} ({precision}): {line}\n(full ptxas report:\n{stderr})",
                            file.path.display()
                        );
                    }
                }
                let _ = writeln!(
                    table,
                    "    ({:?}, {precision:?}, include_bytes!({:?})),",
                    file.stem,
                    out.display().to_string()
                );
            }
            for kernel in &file.kernels {
                let _ = writeln!(names, "    ({kernel:?}, {:?}),", file.stem);
            }
        }
        table.push_str("];\n");
        names.push_str("];\n");
        std::fs::write(out_dir.join("ptxas_report.txt"), &report).expect("write ptxas report");
        std::fs::write(out_dir.join("cuda_kernels.rs"), table + &names).expect("write kernel table");
        let arch_list: Vec<String> = archs.iter().map(|a| format!("sm_{a}")).collect();
        println!(
            "cargo:warning=built {} kernel files (f32 and bf16) for {} (+PTX compute_{newest}) with {}; no register spills; \
             ptxas report: {}",
            files.len(),
            arch_list.join(", "),
            nvcc.display(),
            out_dir.join("ptxas_report.txt").display()
        );
    }
}
