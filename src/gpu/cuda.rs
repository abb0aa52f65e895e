//! The CUDA driver: a real NVIDIA GPU through cudarc's thin `result` layer over the driver API (libcuda is
//! loaded at run time, so the crate builds and runs on machines without it and says so instead of panicking).
//! Kernels come from the fat binaries build.rs embedded (cubin per target arch plus PTX for newer GPUs), one per
//! kernel file and precision (`floatX` = f32 or bf16).

use super::driver::{Arg, DType, DevicePtr, Dim3, Driver};
use super::kernels::{FATBINS, KERNELS};
use crate::error::{Error, Result};
use cudarc::cublas;
use cudarc::driver::{result, sys, DriverError};
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
    cublas: cublas::sys::cublasHandle_t,
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
        // SAFETY: only probes for libcublas before its first use, as for libcuda above.
        if !unsafe { cublas::sys::is_culib_present() } {
            return Err(Error::Cuda(
                "no cuBLAS library (libcublas.so, .so.13 or .so.12) found; install the CUDA toolkit or add the \
                 directory holding it (pip's nvidia-cublas wheels included) to LD_LIBRARY_PATH, or use --device cpu"
                    .to_string(),
            ));
        }
        let cublas = cublas::result::create_handle().map_err(|e| Error::Cuda(format!("cublasCreate: {e:?}")))?;
        Ok(CudaDriver {
            name: format!("cuda ({gpu}, sm_{major}{minor})"),
            modules,
            functions: RefCell::new(HashMap::new()),
            cublas,
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
    ) -> Result<()> {
        use cublas::sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
        use cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cudaDataType};
        // cuBLAS is column-major, and a row-major (r, c) matrix is its column-major transpose with leading
        // dimension c. So row-major c = op(a) op(b) is column-major cᵀ = op(b)ᵀ op(a)ᵀ: swap the operands, and each
        // operand's stored (row-major) layout is already the transpose cuBLAS must see unless it was transposed.
        let (op_b, ldb) = if transb { (CUBLAS_OP_T, k) } else { (CUBLAS_OP_N, n) };
        let (op_a, lda) = if transa { (CUBLAS_OP_T, m) } else { (CUBLAS_OP_N, k) };
        let (alpha, beta) = (1.0f32, if accumulate { 1.0f32 } else { 0.0 });
        let (data_type, compute) = match dtype {
            // Plain f32: no TF32 rounding of the inputs, so the GPU matches the CPU reference to f32 accuracy.
            DType::F32 => (cudaDataType::CUDA_R_32F, cublasComputeType_t::CUBLAS_COMPUTE_32F),
            // bf16 operands on the tensor cores, accumulated in f32 (llm.c's choice).
            DType::Bf16 => (cudaDataType::CUDA_R_16BF, cublasComputeType_t::CUBLAS_COMPUTE_32F),
        };
        // SAFETY: a, b, c are device allocations of this context holding the (m, k), (k, n) and (m, n) matrices the
        // shapes describe, of element type `dtype`; alpha and beta are f32 as CUBLAS_COMPUTE_32F requires and
        // outlive the call (cuBLAS reads host scalars before returning).
        unsafe {
            cublas::result::gemm_ex(
                self.cublas,
                op_b,
                op_a,
                n as i32,
                m as i32,
                k as i32,
                &alpha as *const f32 as *const c_void,
                b as *const c_void,
                data_type,
                ldb as i32,
                a as *const c_void,
                data_type,
                lda as i32,
                &beta as *const f32 as *const c_void,
                c as *mut c_void,
                data_type,
                n as i32,
                compute,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| Error::Cuda(format!("cublasGemmEx {} ({m}x{k} · {k}x{n}): {e:?}", dtype.name())))
    }

    fn synchronize(&self) -> Result<()> {
        result::ctx::synchronize().map_err(|e| cuda_error("kernel execution (cuCtxSynchronize)", e))
    }
}

impl Drop for CudaDriver {
    fn drop(&mut self) {
        // SAFETY: the handle was created in new() and is destroyed once, here; nothing uses it afterwards.
        let _ = unsafe { cublas::result::destroy_handle(self.cublas) };
    }
}
