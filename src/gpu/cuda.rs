//! The CUDA driver: a real NVIDIA GPU through cudarc's thin `result` layer over the driver API (libcuda is
//! loaded at run time, so the crate builds and runs on machines without it and says so instead of panicking).
//! Kernels come from the fat binaries build.rs embedded (cubin per target arch plus PTX for newer GPUs), one per
//! kernel file and precision (`floatX` = f32 or bf16).

use super::driver::{Arg, DType, DevicePtr, Dim3, Driver};
use super::kernels::{FATBINS, KERNELS};
use crate::error::{Error, Result};
use cudarc::driver::{result, sys, DriverError};
use cudarc::{cublas, cublaslt};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_void, CString};

fn cuda_error(what: &str, e: DriverError) -> Error {
    Error::Cuda(format!("{what}: {e:?}"))
}

/// One GPU: its primary context, the loaded kernel modules, and functions looked up so far.
pub struct CudaDriver {
    name: String,
    /// Module of each kernel file, by (file stem, precision name).
    modules: HashMap<(&'static str, &'static str), sys::CUmodule>,
    functions: RefCell<HashMap<(String, DType), sys::CUfunction>>,
    cublaslt: cublaslt::sys::cublasLtHandle_t,
    /// cuBLASLt's workspace: some of its fastest algorithms need scratch memory (llm.c gives it 32 MiB).
    /// Allocated by the first GEMM, so that it is part of the memory plan the trainer checks, not taken before.
    workspace: std::cell::Cell<Option<DevicePtr>>,
}

/// Bytes of cuBLASLt workspace, allocated once per driver.
pub const CUBLASLT_WORKSPACE_BYTES: usize = 32 << 20;

fn cublaslt_error(what: &str, e: cublaslt::result::CublasError) -> Error {
    Error::Cuda(format!("{what}: {e:?}"))
}

impl CudaDriver {
    /// Opens GPU `ordinal` and loads every kernel file.
    pub fn new(ordinal: usize) -> Result<Self> {
        // SAFETY: only probes for libcuda; every later cudarc call would panic if it were missing.
        if !unsafe { sys::is_culib_present() } {
            return Err(Error::Cuda("no CUDA driver (libcuda.so) on this machine; use --device cpu".to_string()));
        }
        result::init().map_err(|e| cuda_error("cuInit", e))?;
        let count = result::device::get_count().map_err(|e| cuda_error("cuDeviceGetCount", e))?;
        if ordinal as i32 >= count {
            return Err(Error::Cuda(format!("GPU {ordinal} requested, {count} present")));
        }
        let device = result::device::get(ordinal as i32).map_err(|e| cuda_error("cuDeviceGet", e))?;
        // SAFETY: device is a valid handle from cuDeviceGet; the primary context lives as long as the process.
        let ctx =
            unsafe { result::primary_ctx::retain(device) }.map_err(|e| cuda_error("cuDevicePrimaryCtxRetain", e))?;
        // SAFETY: ctx was just retained.
        unsafe { result::ctx::set_current(ctx) }.map_err(|e| cuda_error("cuCtxSetCurrent", e))?;
        let gpu = result::device::get_name(device).map_err(|e| cuda_error("cuDeviceGetName", e))?;
        let attribute = |a| {
            // SAFETY: device is valid and a is a compute-capability attribute.
            unsafe { result::device::get_attribute(device, a) }.map_err(|e| cuda_error("cuDeviceGetAttribute", e))
        };
        let major = attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        let minor = attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
        let mut modules = HashMap::new();
        for &(stem, precision, fatbin) in FATBINS {
            // cuModuleLoadData wants the image 8-byte aligned; include_bytes! promises 1.
            let mut image = vec![0u64; fatbin.len().div_ceil(8)];
            bytemuck::cast_slice_mut::<u64, u8>(&mut image)[..fatbin.len()].copy_from_slice(fatbin);
            // SAFETY: image is a complete fat binary from nvcc, aligned, alive for the call.
            let module = unsafe { result::module::load_data(image.as_ptr() as *const c_void) }.map_err(|e| {
                cuda_error(
                    &format!("loading kernels/{stem}.cu, {precision} (built for other GPUs? set CUDA_COMPUTE_CAP)"),
                    e,
                )
            })?;
            modules.insert((stem, precision), module);
        }
        // SAFETY: only probes for libcublasLt before its first use, as for libcuda above.
        if !unsafe { cublaslt::sys::is_culib_present() } {
            return Err(Error::Cuda(
                "no cuBLASLt library (libcublasLt.so, .so.13 or .so.12) found; install the CUDA toolkit or add the \
                 directory holding it (pip's nvidia-cublas wheels included) to LD_LIBRARY_PATH, or use --device cpu"
                    .to_string(),
            ));
        }
        let cublaslt = cublaslt::result::create_handle().map_err(|e| cublaslt_error("cublasLtCreate", e))?;
        Ok(CudaDriver {
            name: format!("cuda ({gpu}, sm_{major}{minor})"),
            modules,
            functions: RefCell::new(HashMap::new()),
            cublaslt,
            workspace: std::cell::Cell::new(None),
        })
    }

    fn function(&self, name: &str, precision: DType) -> Result<sys::CUfunction> {
        let key = (name.to_string(), precision);
        if let Some(&f) = self.functions.borrow().get(&key) {
            return Ok(f);
        }
        let stem = KERNELS
            .iter()
            .find(|k| k.0 == name)
            .map(|k| k.1)
            .ok_or_else(|| Error::Cuda(format!("no kernel named {name} in kernels/")))?;
        let c_name = CString::new(name).map_err(|_| Error::Cuda(format!("bad kernel name {name:?}")))?;
        // SAFETY: the module was loaded in new() and is never unloaded while the driver lives.
        let f = unsafe { result::module::get_function(self.modules[&(stem, precision.name())], c_name) }
            .map_err(|e| cuda_error(&format!("cuModuleGetFunction({name}, {})", precision.name()), e))?;
        self.functions.borrow_mut().insert(key, f);
        Ok(f)
    }
}

impl Driver for CudaDriver {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn memory_available(&self) -> Option<usize> {
        result::mem_get_info().ok().map(|(free, _total)| free)
    }

    fn workspace_bytes(&self) -> usize {
        CUBLASLT_WORKSPACE_BYTES
    }

    fn alloc(&self, bytes: usize) -> Result<DevicePtr> {
        // SAFETY: plain allocation in the current context.
        unsafe { result::malloc_sync(bytes.max(1)) }.map_err(|e| match e.0 {
            sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
                Error::OutOfMemory(format!("the GPU could not allocate {bytes} bytes"))
            }
            _ => cuda_error("cuMemAlloc", e),
        })
    }

    fn free(&self, ptr: DevicePtr) {
        // SAFETY: ptr came from alloc and DeviceBuffer frees it once. A failure here (a context already torn
        // down at exit) leaves nothing to recover.
        let _ = unsafe { result::free_sync(ptr) };
    }

    fn copy_to_device(&self, dst: DevicePtr, src: &[u8]) -> Result<()> {
        // SAFETY: dst is a device allocation at least src.len() bytes long (DeviceBuffer checks view bounds).
        unsafe { result::memcpy_htod_sync(dst, src) }.map_err(|e| cuda_error("cuMemcpyHtoD", e))
    }

    fn copy_to_host(&self, dst: &mut [u8], src: DevicePtr) -> Result<()> {
        // SAFETY: src is a device allocation at least dst.len() bytes long.
        unsafe { result::memcpy_dtoh_sync(dst, src) }.map_err(|e| cuda_error("cuMemcpyDtoH", e))
    }

    fn memset_zero(&self, dst: DevicePtr, bytes: usize) -> Result<()> {
        // SAFETY: dst is a device allocation at least `bytes` long.
        unsafe { result::memset_d8_sync(dst, 0, bytes) }.map_err(|e| cuda_error("cuMemsetD8", e))
    }

    fn launch(
        &self,
        name: &str,
        precision: DType,
        grid: Dim3,
        block: Dim3,
        shared_bytes: u32,
        args: &[Arg],
    ) -> Result<()> {
        let f = self.function(name, precision)?;
        let mut values: Vec<u64> = args.iter().map(Arg::slot).collect();
        let mut params: Vec<*mut c_void> = values.iter_mut().map(|v| v as *mut u64 as *mut c_void).collect();
        // SAFETY: f is a kernel of the loaded modules; params holds one pointer per kernel parameter, each alive
        // for the call (cuLaunchKernel copies the values); device pointers come from live allocations.
        unsafe { result::launch_kernel(f, grid, block, shared_bytes, std::ptr::null_mut(), &mut params) }
            .map_err(|e| Error::Kernel { kernel: name.to_string(), message: format!("{e:?}") })
    }

    fn gemm(
        &self,
        dtype: DType,
        transa: bool,
        transb: bool,
        m: usize,
        n: usize,
        k: usize,
        a: DevicePtr,
        b: DevicePtr,
        c: DevicePtr,
        accumulate: bool,
        bias: Option<DevicePtr>,
    ) -> Result<()> {
        use cublas::sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
        use cublaslt::sys::{
            cublasComputeType_t, cublasLtEpilogue_t, cublasLtMatmulDescAttributes_t as Desc,
            cublasLtMatmulPreferenceAttributes_t as Pref, cudaDataType,
        };
        let workspace = match self.workspace.get() {
            Some(w) => w,
            None => {
                let w = self.alloc(CUBLASLT_WORKSPACE_BYTES)?;
                self.workspace.set(Some(w));
                w
            }
        };
        let what = format!("cublasLtMatmul {} ({m}x{k} · {k}x{n})", dtype.name());
        let lt = |e| cublaslt_error(&what, e);
        // cuBLAS(Lt) is column-major, and a row-major (r, c) matrix is its column-major transpose with leading
        // dimension c. So row-major c = op(a) op(b) is column-major cᵀ = op(b)ᵀ op(a)ᵀ: swap the operands, and each
        // operand's stored (row-major) layout is already the transpose cuBLAS must see unless it was transposed.
        // Layouts describe the stored matrices, column-major: (rows, cols, leading dimension).
        let (op_b, layout_b) = if transb { (CUBLAS_OP_T, (k, n, k)) } else { (CUBLAS_OP_N, (n, k, n)) };
        let (op_a, layout_a) = if transa { (CUBLAS_OP_T, (m, k, m)) } else { (CUBLAS_OP_N, (k, m, k)) };
        let data_type = match dtype {
            // Plain f32: no TF32 rounding of the inputs, so the GPU matches the CPU reference to f32 accuracy.
            DType::F32 => cudaDataType::CUDA_R_32F,
            // bf16 operands on the tensor cores, accumulated in f32 (llm.c's choice).
            DType::Bf16 => cudaDataType::CUDA_R_16BF,
        };
        let (alpha, beta) = (1.0f32, if accumulate { 1.0f32 } else { 0.0 });
        let layout = |(rows, cols, ld): (usize, usize, usize)| {
            cublaslt::result::create_matrix_layout(data_type, rows as u64, cols as u64, ld as i64).map_err(lt)
        };
        let desc =
            cublaslt::result::create_matmul_desc(cublasComputeType_t::CUBLAS_COMPUTE_32F, cudaDataType::CUDA_R_32F)
                .map_err(lt)?;
        let (la, lb, lc) = (layout(layout_b)?, layout(layout_a)?, layout((n, m, n))?);
        let pref = cublaslt::result::create_matmul_pref().map_err(lt)?;
        let set_desc = |attr: Desc, value: *const c_void, bytes: usize| {
            // SAFETY: desc is live; value points at `bytes` bytes of the type cuBLASLt documents for `attr`.
            unsafe { cublaslt::result::set_matmul_desc_attribute(desc, attr, value, bytes) }.map_err(lt)
        };
        let run = || -> Result<()> {
            let (op_b, op_a) = (op_b as i32, op_a as i32);
            set_desc(Desc::CUBLASLT_MATMUL_DESC_TRANSA, &op_b as *const i32 as *const c_void, 4)?;
            set_desc(Desc::CUBLASLT_MATMUL_DESC_TRANSB, &op_a as *const i32 as *const c_void, 4)?;
            if let Some(bias) = bias {
                // The bias has one element per row of the column-major result (n of them, our output columns), of
                // the output's type; cuBLASLt adds it in f32 before rounding the result once.
                let epilogue = cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS;
                set_desc(Desc::CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue as *const _ as *const c_void, 4)?;
                set_desc(Desc::CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias as *const u64 as *const c_void, 8)?;
            }
            let set_pref = |attr: Pref, value: u64, bytes: usize| {
                // SAFETY: pref is live; the value's low `bytes` bytes (little-endian) are the u64 or u32 cuBLASLt
                // documents for `attr`.
                unsafe { cublaslt::result::set_matmul_pref_attribute(pref, attr, &value as *const u64 as _, bytes) }
                    .map_err(lt)
            };
            set_pref(Pref::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, CUBLASLT_WORKSPACE_BYTES as u64, 8)?;
            // The heuristic assumes 256-byte aligned matrices unless told otherwise, and a tensor here is a view
            // at any element offset of one allocation: tell it each pointer's actual alignment.
            let alignment = |p: DevicePtr| 1u64 << p.trailing_zeros().min(8);
            set_pref(Pref::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, alignment(b), 4)?;
            set_pref(Pref::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, alignment(a), 4)?;
            set_pref(Pref::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, alignment(c), 4)?;
            set_pref(Pref::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, alignment(c), 4)?;
            // SAFETY: every descriptor and layout above is live and describes the matrices at a, b and c.
            let heuristic =
                unsafe { cublaslt::result::get_matmul_algo_heuristic(self.cublaslt, desc, la, lb, lc, lc, pref) }
                    .map_err(lt)?;
            // SAFETY: a, b, c (and the bias) are device allocations of this context holding the matrices the layouts
            // describe, of element type `dtype`; alpha and beta are f32 as the f32 scale type requires and outlive
            // the call; the workspace is CUBLASLT_WORKSPACE_BYTES of device memory owned by this driver.
            unsafe {
                cublaslt::result::matmul(
                    self.cublaslt,
                    desc,
                    &alpha as *const f32 as *const c_void,
                    &beta as *const f32 as *const c_void,
                    b as *const c_void,
                    la,
                    a as *const c_void,
                    lb,
                    c as *const c_void,
                    lc,
                    c as *mut c_void,
                    lc,
                    &heuristic.algo,
                    workspace as *mut c_void,
                    CUBLASLT_WORKSPACE_BYTES,
                    std::ptr::null_mut(),
                )
            }
            .map_err(lt)
        };
        let result = run();
        // SAFETY: each object was created above and is destroyed once, here, after its last use.
        unsafe {
            let _ = cublaslt::result::destroy_matmul_pref(pref);
            for layout in [la, lb, lc] {
                let _ = cublaslt::result::destroy_matrix_layout(layout);
            }
            let _ = cublaslt::result::destroy_matmul_desc(desc);
        }
        result
    }

    fn synchronize(&self) -> Result<()> {
        result::ctx::synchronize().map_err(|e| cuda_error("kernel execution (cuCtxSynchronize)", e))
    }
}

impl Drop for CudaDriver {
    fn drop(&mut self) {
        // SAFETY: the handle and the workspace were created in new() and are released once, here; nothing uses
        // them afterwards.
        unsafe {
            let _ = cublaslt::result::destroy_handle(self.cublaslt);
            if let Some(workspace) = self.workspace.get() {
                let _ = result::free_sync(workspace);
            }
        }
    }
}
