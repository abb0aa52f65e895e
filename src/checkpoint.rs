//! llm.c model files, so checkpoints move freely between llm.c and llmrs.
//!
//! A model file is a header of 256 little-endian int32 followed by every parameter in `layout.rs` order (wte
//! padded to Vp rows), either as f32 (version 3) or as bf16 (version 5):
//!
//! ```text
//! header[0] = 20240326 (magic)   header[1] = 3 | 5 (version)   header[2] = maxT   header[3] = V
//! header[4] = L                  header[5] = NH                header[6] = C      header[7] = Vp
//! ```
//!
//! Because the parameters are one flat buffer in that same order, reading a checkpoint is one read into one
//! `Vec<f32>`. Writes go to a sibling temporary file that is synced and then renamed over the real name, so a
//! crash mid-write leaves the previous checkpoint intact rather than a truncated one.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use half::bf16;

use crate::config::GPT2Config;
use crate::error::{Error, Result};

// The formats are little-endian and are read with byte casts, which only match on a little-endian host.
#[cfg(target_endian = "big")]
compile_error!("llmrs reads llm.c's little-endian files with byte casts; big-endian hosts are not supported");

/// header[0] of every llm.c model file.
pub const MODEL_MAGIC: i32 = 20240326;
/// header[1] for fp32 parameters.
pub const VERSION_F32: i32 = 3;
/// header[1] for bf16 parameters.
pub const VERSION_BF16: i32 = 5;
/// The header is 256 int32 in every llm.c format (model, data, tokenizer).
pub const HEADER_INTS: usize = 256;
/// Bytes before the first parameter.
pub const HEADER_BYTES: u64 = (HEADER_INTS * 4) as u64;

/// Elements converted per step when reading or writing bf16, so the conversion needs no second full-size buffer.
const BF16_CHUNK: usize = 1 << 20;

/// How the parameters are stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelDtype {
    /// Version 3: 4 bytes per parameter, exact.
    F32,
    /// Version 5: 2 bytes per parameter, rounded to nearest even from f32.
    Bf16,
}

impl ModelDtype {
    /// The header[1] version number of this dtype.
    pub fn version(self) -> i32 {
        match self {
            ModelDtype::F32 => VERSION_F32,
            ModelDtype::Bf16 => VERSION_BF16,
        }
    }

    /// Bytes per stored parameter.
    pub fn bytes(self) -> u64 {
        match self {
            ModelDtype::F32 => 4,
            ModelDtype::Bf16 => 2,
        }
    }
}

/// Reads the header of the model file at `path`: the model's shape and how its parameters are stored.
pub fn read_model_header(path: &Path) -> Result<(GPT2Config, ModelDtype)> {
    let mut file = File::open(path).map_err(|e| Error::io("cannot open model file", path, e))?;
    let (config, dtype, _) = read_header(&mut file, path)?;
    Ok((config, dtype))
}

/// Reads the model file at `path`: its shape and its `config.num_parameters()` parameters as f32 (bf16 files are
/// widened exactly).
pub fn read_model(path: &Path) -> Result<(GPT2Config, Vec<f32>)> {
    let mut file = File::open(path).map_err(|e| Error::io("cannot open model file", path, e))?;
    let (config, dtype, num_params) = read_header(&mut file, path)?;
    let read_err = |e| Error::io("cannot read model file", path, e);

    // params: (num_parameters,) in layout.rs order.
    let mut params = vec![0.0f32; num_params];
    match dtype {
        ModelDtype::F32 => file.read_exact(bytemuck::cast_slice_mut(&mut params)).map_err(read_err)?,
        ModelDtype::Bf16 => {
            let mut chunk = vec![bf16::ZERO; BF16_CHUNK.min(num_params)];
            for out in params.chunks_mut(BF16_CHUNK) {
                let chunk = &mut chunk[..out.len()];
                file.read_exact(bytemuck::cast_slice_mut(chunk)).map_err(read_err)?;
                for (o, b) in out.iter_mut().zip(chunk.iter()) {
                    *o = b.to_f32();
                }
            }
        }
    }
    Ok((config, params))
}

/// Writes `params` (`config.num_parameters()` of them, layout.rs order) to `path` as an llm.c model file of
/// `dtype`. The file appears under `path` only once it is complete and synced to disk.
pub fn write_model(path: &Path, config: &GPT2Config, params: &[f32], dtype: ModelDtype) -> Result<()> {
    config.validate(&format!("model config for {}", path.display()))?;
    let expected = config.num_parameters();
    if params.len() != expected {
        return Err(Error::format(path, "parameters to write (config.num_parameters())", expected, params.len()));
    }

    let mut header = [0i32; HEADER_INTS];
    let shape = [
        config.max_seq_len,
        config.vocab_size,
        config.num_layers,
        config.num_heads,
        config.channels,
        config.padded_vocab_size,
    ];
    header[0] = MODEL_MAGIC;
    header[1] = dtype.version();
    for (slot, value) in header[2..8].iter_mut().zip(shape) {
        // validate() bounds the parameter count by i32::MAX, so every dimension fits too.
        *slot = value as i32;
    }

    write_atomically(path, |out| {
        out.write_all(bytemuck::bytes_of(&header))?;
        match dtype {
            ModelDtype::F32 => out.write_all(bytemuck::cast_slice(params))?,
            ModelDtype::Bf16 => {
                let mut chunk = vec![bf16::ZERO; BF16_CHUNK.min(params.len())];
                for src in params.chunks(BF16_CHUNK) {
                    let chunk = &mut chunk[..src.len()];
                    for (c, &p) in chunk.iter_mut().zip(src) {
                        // half rounds f32 -> bf16 to nearest, ties to even.
                        *c = bf16::from_f32(p);
                    }
                    out.write_all(bytemuck::cast_slice(chunk))?;
                }
            }
        }
        Ok(())
    })
}

/// Reads and checks the header; leaves `file` at the first parameter. Returns the shape, the dtype and the number
/// of parameters, after checking that the file holds exactly that many.
fn read_header(file: &mut File, path: &Path) -> Result<(GPT2Config, ModelDtype, usize)> {
    let file_len = file.metadata().map_err(|e| Error::io("cannot read metadata of model file", path, e))?.len();
    if file_len < HEADER_BYTES {
        return Err(Error::format(
            path,
            "file size (an llm.c model header is 256 int32)",
            format!("at least {HEADER_BYTES} bytes"),
            format!("{file_len} bytes"),
        ));
    }
    let mut header = [0i32; HEADER_INTS];
    file.read_exact(bytemuck::bytes_of_mut(&mut header)).map_err(|e| Error::io("cannot read model file", path, e))?;

    if header[0] != MODEL_MAGIC {
        return Err(Error::format(path, "magic number (header[0]) of an llm.c model file", MODEL_MAGIC, header[0]));
    }
    let dtype = match header[1] {
        VERSION_F32 => ModelDtype::F32,
        VERSION_BF16 => ModelDtype::Bf16,
        other => {
            return Err(Error::format(
                path,
                "version (header[1])",
                format!("{VERSION_F32} (fp32) or {VERSION_BF16} (bf16)"),
                other,
            ))
        }
    };
    let field = |index: usize, name: &str| -> Result<usize> {
        usize::try_from(header[index]).map_err(|_| {
            Error::format(path, format!("{name} (header[{index}])"), "a non-negative number", header[index])
        })
    };
    let config = GPT2Config {
        max_seq_len: field(2, "maxT")?,
        vocab_size: field(3, "V")?,
        num_layers: field(4, "L")?,
        num_heads: field(5, "NH")?,
        channels: field(6, "C")?,
        padded_vocab_size: field(7, "Vp")?,
    };
    config.validate(&format!("model header of {}", path.display()))?;

    let num_params = config.num_parameters();
    let expected_len = HEADER_BYTES + num_params as u64 * dtype.bytes();
    if file_len != expected_len {
        return Err(Error::format(
            path,
            format!(
                "file size for {num_params} {} parameters",
                match dtype {
                    ModelDtype::F32 => "fp32",
                    ModelDtype::Bf16 => "bf16",
                }
            ),
            format!("{expected_len} bytes"),
            format!("{file_len} bytes"),
        ));
    }
    Ok((config, dtype, num_params))
}

/// Writes a file so that `path` only ever holds a complete version: `write` fills a sibling `<name>.tmp`, which is
/// synced and then renamed over `path`. On failure the temporary file is removed and `path` is left untouched.
pub(crate) fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<&File>) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = temporary_sibling(path);
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| Error::io("cannot create", &tmp, e))?;
        let mut out = std::io::BufWriter::new(&file);
        write(&mut out).and_then(|()| out.flush()).map_err(|e| Error::io("cannot write", &tmp, e))?;
        drop(out);
        file.sync_all().map_err(|e| Error::io("cannot sync", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io("cannot rename temporary file to", path, e))
    })();
    if result.is_err() {
        // Best effort: the error already names what went wrong; a leftover .tmp would only confuse.
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    // Make the rename itself durable (Unix: a directory can be opened and synced).
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("cannot sync directory", dir, e))?;
    }
    Ok(())
}

/// `dir/name` -> `dir/name.tmp`.
fn temporary_sibling(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}
