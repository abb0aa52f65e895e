//! The small driver every GPU launcher speaks to: allocate, copy, zero, launch a kernel by name, synchronise.
//!
//! Two implementations exist: the CUDA driver (a real GPU) and the emulator (`dev/emu`: the same `kernels/*.cu`
//! compiled by the host C++ compiler, each CUDA thread a fiber), so the launchers in `src/gpu` and their tests are
//! one code path. Device memory is addressed as raw device pointers (`u64`) plus element offsets, the way
//! `layout.rs` addresses the flat host buffers; the unsafety of raw pointers stays inside the drivers.

use crate::error::Result;
use std::rc::Rc;

/// A device address, as CUDA's driver API passes it.
pub type DevicePtr = u64;

/// One kernel argument, marshalled as `cuLaunchKernel` expects: a pointer to each value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arg {
    Ptr(DevicePtr),
    I32(i32),
    F32(f32),
}

impl Arg {
    /// The value in an 8-byte slot, as `cuLaunchKernel` reads each argument through its `void*`: i32 and f32 sit
    /// in the low bytes (little-endian), which is what the kernel's 4-byte parameter types read.
    pub fn slot(&self) -> u64 {
        match *self {
            Arg::Ptr(p) => p,
            Arg::I32(v) => v as u32 as u64,
            Arg::F32(v) => v.to_bits() as u64,
        }
    }
}

/// The element type of a device tensor: the storage precision of parameters, activations and gradients (kernels'
/// `floatX`). Statistics, master weights and AdamW's moments are always `F32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    Bf16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::Bf16 => 2,
        }
    }

    /// The name build.rs gives the kernels compiled with this `floatX`: "f32" or "bf16".
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::Bf16 => "bf16",
        }
    }

    /// `values` in this type's bytes (bf16: rounded to nearest even).
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            DType::F32 => bytemuck::cast_slice(values).to_vec(),
            DType::Bf16 => {
                let half: Vec<half::bf16> = values.iter().map(|&x| half::bf16::from_f32(x)).collect();
                bytemuck::cast_slice(&half).to_vec()
            }
        }
    }

    /// Elements of this type in `bytes`, widened into `out` (as long as the bytes hold elements).
    pub fn decode(self, bytes: &[u8], out: &mut [f32]) {
        match self {
            DType::F32 => out.copy_from_slice(bytemuck::cast_slice(bytes)),
            DType::Bf16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
        }
    }
}

/// Grid and block sizes in x, y, z.
pub type Dim3 = (u32, u32, u32);

/// What a backend needs from a device.
pub trait Driver {
    /// "cuda (NVIDIA H200, sm_90)", "emu (kernels on the CPU)", for messages.
    fn name(&self) -> String;
    /// Free device memory in bytes, or None where the driver cannot tell.
    fn memory_available(&self) -> Option<usize>;
    /// Device memory the driver allocates for itself once work starts (cuBLASLt's workspace), for memory plans.
    fn workspace_bytes(&self) -> usize {
        0
    }
    /// `bytes` of device memory. The emulator fills fresh memory with NaN bytes so reads of unwritten memory show.
    fn alloc(&self, bytes: usize) -> Result<DevicePtr>;
    /// Frees memory from `alloc`.
    fn free(&self, ptr: DevicePtr);
    /// Host → device.
    fn copy_to_device(&self, dst: DevicePtr, src: &[u8]) -> Result<()>;
    /// Device → host (synchronising).
    fn copy_to_host(&self, dst: &mut [u8], src: DevicePtr) -> Result<()>;
    /// Sets `bytes` bytes at `dst` to zero.
    fn memset_zero(&self, dst: DevicePtr, bytes: usize) -> Result<()>;
    /// Launches the kernel `name` (an `extern "C" __global__` function of kernels/) as compiled for `floatX` =
    /// `precision`, with `shared_bytes` of dynamic shared memory.
    fn launch(
        &self,
        name: &str,
        precision: DType,
        grid: Dim3,
        block: Dim3,
        shared_bytes: u32,
        args: &[Arg],
    ) -> Result<()>;
    /// The GEMM every linear layer needs, all matrices row-major and contiguous and of element type `dtype`,
    /// accumulated in f32: c (m, n) = op(a) · op(b), plus the old c when `accumulate`, plus `bias` (n) on every
    /// row when given (an epilogue of the same call, so c is written once). op(a) is (m, k): `a` is stored (m, k),
    /// or (k, m) when `transa`; op(b) is (k, n): `b` is stored (k, n), or (n, k) when `transb`.
    #[allow(clippy::too_many_arguments)]
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
    ) -> Result<()>;
    /// Waits for all launched work and reports any error it raised.
    fn synchronize(&self) -> Result<()>;
}

/// An allocation of `len` elements of `dtype` on a device, freed on drop. Views (`at`) address parts of it.
pub struct DeviceBuffer {
    driver: Rc<dyn Driver>,
    ptr: DevicePtr,
    len: usize,
    dtype: DType,
}

/// `len` elements of `dtype` starting at a device address: a tensor inside a flat device buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSlice {
    pub ptr: DevicePtr,
    pub len: usize,
    pub dtype: DType,
}

impl DeviceBuffer {
    /// `len` floats on `driver`'s device, contents undefined (NaN under the emulator).
    pub fn new(driver: &Rc<dyn Driver>, len: usize) -> Result<Self> {
        DeviceBuffer::typed(driver, len, DType::F32)
    }

    /// `len` elements of `dtype` on `driver`'s device, contents undefined (NaN under the emulator).
    pub fn typed(driver: &Rc<dyn Driver>, len: usize, dtype: DType) -> Result<Self> {
        let bytes = len.checked_mul(dtype.size()).ok_or_else(|| {
            crate::error::Error::OutOfMemory(format!("a device buffer of {len} {} elements", dtype.name()))
        })?;
        let ptr = driver.alloc(bytes)?;
        Ok(DeviceBuffer { driver: Rc::clone(driver), ptr, len, dtype })
    }

    /// A device copy of `data`, as f32.
    pub fn from_host(driver: &Rc<dyn Driver>, data: &[f32]) -> Result<Self> {
        DeviceBuffer::from_host_as(driver, data, DType::F32)
    }

    /// A device copy of `data` as `dtype` (bf16: rounded to nearest even).
    pub fn from_host_as(driver: &Rc<dyn Driver>, data: &[f32], dtype: DType) -> Result<Self> {
        let buf = DeviceBuffer::typed(driver, data.len(), dtype)?;
        buf.write(data)?;
        Ok(buf)
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole buffer as a slice.
    pub fn slice(&self) -> DeviceSlice {
        DeviceSlice { ptr: self.ptr, len: self.len, dtype: self.dtype }
    }

    /// `len` elements from element `offset`.
    pub fn at(&self, offset: usize, len: usize) -> DeviceSlice {
        assert!(offset + len <= self.len, "view {offset}+{len} outside a buffer of {}", self.len);
        DeviceSlice { ptr: self.ptr + (offset * self.dtype.size()) as u64, len, dtype: self.dtype }
    }

    /// Overwrites the buffer's start with `data`, converted to the buffer's type.
    pub fn write(&self, data: &[f32]) -> Result<()> {
        assert!(data.len() <= self.len, "{} elements into a buffer of {}", data.len(), self.len);
        self.driver.copy_to_device(self.ptr, &self.dtype.encode(data))
    }

    /// The whole buffer on the host, widened to f32.
    pub fn read(&self) -> Result<Vec<f32>> {
        let mut out = vec![0.0f32; self.len];
        self.slice().read_into(&*self.driver, &mut out)?;
        Ok(out)
    }

    /// Sets every element to 0.
    pub fn zero(&self) -> Result<()> {
        self.slice().zero(&*self.driver)
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        self.driver.free(self.ptr);
    }
}

impl DeviceSlice {
    pub fn arg(&self) -> Arg {
        Arg::Ptr(self.ptr)
    }

    pub fn bytes(&self) -> usize {
        self.len * self.dtype.size()
    }

    /// The slice's elements widened to f32 into `out` (`len` long).
    pub fn read_into(&self, driver: &dyn Driver, out: &mut [f32]) -> Result<()> {
        assert_eq!(out.len(), self.len, "reading {} elements into {}", self.len, out.len());
        match self.dtype {
            DType::F32 => driver.copy_to_host(bytemuck::cast_slice_mut(out), self.ptr),
            DType::Bf16 => {
                let mut bytes = vec![0u8; self.bytes()];
                driver.copy_to_host(&mut bytes, self.ptr)?;
                self.dtype.decode(&bytes, out);
                Ok(())
            }
        }
    }

    /// Sets every element to 0 (all-zero bytes are 0.0 in f32 and bf16 alike).
    pub fn zero(&self, driver: &dyn Driver) -> Result<()> {
        driver.memset_zero(self.ptr, self.bytes())
    }

    /// The one element type of `slices`, the kernels' `floatX` for a launch that reads and writes them; an error
    /// when they differ (a launcher must not mix bf16 and f32 tensors where a kernel expects one floatX).
    pub fn common_dtype(kernel: &str, slices: &[DeviceSlice]) -> Result<DType> {
        let first = slices.first().map_or(DType::F32, |s| s.dtype);
        match slices.iter().find(|s| s.dtype != first) {
            None => Ok(first),
            Some(other) => Err(crate::error::Error::config(
                kernel,
                format!(
                    "tensors of {} and {} in one launch; its floatX tensors must share a type",
                    first.name(),
                    other.dtype.name()
                ),
            )),
        }
    }

    /// Checks that a tensor the kernel keeps in float (statistics, master weights, moments) is f32.
    pub fn expect_f32(&self, kernel: &str, what: &str) -> Result<()> {
        if self.dtype == DType::F32 {
            Ok(())
        } else {
            Err(crate::error::Error::config(kernel, format!("{what} must be f32, found {}", self.dtype.name())))
        }
    }
}

/// A `u32` buffer (token ids) on a device, freed on drop.
pub struct DeviceTokens {
    driver: Rc<dyn Driver>,
    pub ptr: DevicePtr,
    pub len: usize,
}

impl DeviceTokens {
    /// A device buffer for `len` token ids.
    pub fn new(driver: &Rc<dyn Driver>, len: usize) -> Result<Self> {
        let ptr = driver.alloc(len * std::mem::size_of::<u32>())?;
        Ok(DeviceTokens { driver: Rc::clone(driver), ptr, len })
    }

    /// Overwrites the buffer's start with `tokens`.
    pub fn write(&self, tokens: &[u32]) -> Result<()> {
        assert!(tokens.len() <= self.len, "{} tokens into a buffer of {}", tokens.len(), self.len);
        self.driver.copy_to_device(self.ptr, bytemuck::cast_slice(tokens))
    }

    pub fn arg(&self) -> Arg {
        Arg::Ptr(self.ptr)
    }
}

impl Drop for DeviceTokens {
    fn drop(&mut self) {
        self.driver.free(self.ptr);
    }
}
