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

/// Grid and block sizes in x, y, z.
pub type Dim3 = (u32, u32, u32);

/// What a backend needs from a device.
pub trait Driver {
    /// "cuda (NVIDIA H200, sm_90)", "emu (kernels on the CPU)", for messages.
    fn name(&self) -> String;
    /// Free device memory in bytes, or None where the driver cannot tell.
    fn memory_available(&self) -> Option<usize>;
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
    /// Launches the kernel `name` (an `extern "C" __global__` function of kernels/) with `shared_bytes` of dynamic
    /// shared memory.
    fn launch(&self, name: &str, grid: Dim3, block: Dim3, shared_bytes: u32, args: &[Arg]) -> Result<()>;
    /// The GEMM every linear layer needs, all matrices row-major and contiguous:
    /// c (m, n) = op(a) · op(b), plus the old c when `accumulate`. op(a) is (m, k): `a` is stored (m, k), or (k, m)
    /// when `transa`; op(b) is (k, n): `b` is stored (k, n), or (n, k) when `transb`.
    #[allow(clippy::too_many_arguments)]
    fn sgemm(
        &self,
        transa: bool,
        transb: bool,
        m: usize,
        n: usize,
        k: usize,
        a: DevicePtr,
        b: DevicePtr,
        c: DevicePtr,
        accumulate: bool,
    ) -> Result<()>;
    /// Waits for all launched work and reports any error it raised.
    fn synchronize(&self) -> Result<()>;
}

/// An allocation of `len` f32 on a device, freed on drop. Views (`at`) address parts of it.
pub struct DeviceBuffer {
    driver: Rc<dyn Driver>,
    ptr: DevicePtr,
    len: usize,
}

/// `len` f32 starting at a device address: a tensor inside a flat device buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSlice {
    pub ptr: DevicePtr,
    pub len: usize,
}

const F32_BYTES: usize = std::mem::size_of::<f32>();

impl DeviceBuffer {
    /// `len` floats on `driver`'s device, contents undefined (NaN under the emulator).
    pub fn new(driver: &Rc<dyn Driver>, len: usize) -> Result<Self> {
        let ptr = driver.alloc(len * F32_BYTES)?;
        Ok(DeviceBuffer { driver: Rc::clone(driver), ptr, len })
    }

    /// A device copy of `data`.
    pub fn from_host(driver: &Rc<dyn Driver>, data: &[f32]) -> Result<Self> {
        let buf = DeviceBuffer::new(driver, data.len())?;
        buf.driver.copy_to_device(buf.ptr, bytemuck::cast_slice(data))?;
        Ok(buf)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole buffer as a slice.
    pub fn slice(&self) -> DeviceSlice {
        DeviceSlice { ptr: self.ptr, len: self.len }
    }

    /// `len` floats from element `offset`.
    pub fn at(&self, offset: usize, len: usize) -> DeviceSlice {
        assert!(offset + len <= self.len, "view {offset}+{len} outside a buffer of {}", self.len);
        DeviceSlice { ptr: self.ptr + (offset * F32_BYTES) as u64, len }
    }

    /// Overwrites the buffer's start with `data`.
    pub fn write(&self, data: &[f32]) -> Result<()> {
        assert!(data.len() <= self.len, "{} floats into a buffer of {}", data.len(), self.len);
        self.driver.copy_to_device(self.ptr, bytemuck::cast_slice(data))
    }

    /// The whole buffer on the host.
    pub fn read(&self) -> Result<Vec<f32>> {
        let mut out = vec![0.0f32; self.len];
        self.driver.copy_to_host(bytemuck::cast_slice_mut(&mut out), self.ptr)?;
        Ok(out)
    }

    /// Sets every element to 0.
    pub fn zero(&self) -> Result<()> {
        self.driver.memset_zero(self.ptr, self.len * F32_BYTES)
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
