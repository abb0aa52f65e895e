//! Text to tokens and back, offline.
//!
//! Two sources: GPT-2's own BPE (`gpt2()`, the `r50k_base` ranks that ship inside tiktoken-rs, so no download),
//! which encodes and decodes, and llm.c's `tokenizer.bin` (`from_llmc_file`), a plain table of each token's bytes
//! that can only decode. Either way decoding is a table lookup: every token id maps to its bytes, the bytes are
//! concatenated and read as UTF-8 (lossily: a single token may be half a character). Ids outside the table (the
//! padding rows of a padded vocabulary, say) decode to a visible `<|unk ID|>` instead of failing.
//!
//! llm.c's tokenizer file: a header of 256 little-endian uint32, then one entry per token (a u8 length, then that
//! many bytes):
//!
//! ```text
//! header[0] = 20240328 (magic)   header[1] = 1 | 2 (version)   header[2] = V   header[3] = EOT id (version 2)
//! ```

use std::path::{Path, PathBuf};

use tiktoken_rs::CoreBPE;

use crate::checkpoint::write_atomically;
use crate::config::GPT2_VOCAB_SIZE;
use crate::error::{Error, Result};

/// header[0] of llm.c's tokenizer file.
pub const TOKENIZER_MAGIC: u32 = 20240328;
/// GPT-2's `<|endoftext|>`, the id version-1 files imply (they predate header[3]).
pub const GPT2_EOT_TOKEN: u32 = 50256;

/// The llm.c tokenizer version written by `write_llmc_file`: version 2, which records the EOT id in header[3].
pub const TOKENIZER_VERSION: u32 = 2;

/// Writes an llm.c `tokenizer.bin` (version 2) for a vocabulary given as each token's bytes, in id order, so that
/// `train_gpt2 --tokenizer` (or llm.c) can decode samples of a model trained on it. Every token must be 1 to 255
/// bytes long (the format stores the length in one byte). Written atomically.
pub fn write_llmc_file(path: &Path, tokens: &[&[u8]], eot_token: u32) -> Result<()> {
    if let Some((id, token)) = tokens.iter().enumerate().find(|(_, t)| t.is_empty() || t.len() > 255) {
        return Err(Error::config(
            "tokenizer",
            format!("token {id} is {} bytes long; an llm.c tokenizer file holds tokens of 1 to 255 bytes", token.len()),
        ));
    }
    if eot_token as usize >= tokens.len() {
        return Err(Error::config(
            "tokenizer",
            format!("EOT id {eot_token} is outside the vocabulary of {} tokens", tokens.len()),
        ));
    }
    let mut header = [0u32; 256];
    header[..4].copy_from_slice(&[TOKENIZER_MAGIC, TOKENIZER_VERSION, tokens.len() as u32, eot_token]);
    write_atomically(path, |out| {
        use std::io::Write;
        out.write_all(bytemuck::bytes_of(&header))?;
        for token in tokens {
            out.write_all(&[token.len() as u8])?;
            out.write_all(token)?;
        }
        Ok(())
    })
}

/// A vocabulary: each token's bytes, plus the BPE ranks when it can also encode.
pub struct Tokenizer {
    /// Where the vocabulary came from (a file, or "GPT-2 BPE (r50k_base)"), for messages.
    source: PathBuf,
    /// Every token's bytes, back to back; token i is `bytes[ends[i - 1]..ends[i]]` (with ends[-1] = 0).
    bytes: Vec<u8>,
    /// (V,) end offset of each token in `bytes`.
    ends: Vec<usize>,
    eot_token: u32,
    /// None for llm.c files: they hold no merge ranks, so they cannot encode.
    bpe: Option<CoreBPE>,
}

impl Tokenizer {
    /// GPT-2's tokenizer (50257 tokens, EOT 50256), from ranks compiled into the binary.
    pub fn gpt2() -> Result<Self> {
        let bpe = tiktoken_rs::r50k_base()
            .map_err(|e| Error::config("tokenizer", format!("cannot build the GPT-2 tokenizer (r50k_base): {e}")))?;
        let mut bytes = Vec::new();
        let mut ends = Vec::with_capacity(GPT2_VOCAB_SIZE);
        for id in 0..GPT2_VOCAB_SIZE as u32 {
            let token = bpe
                .decode_bytes(&[id])
                .map_err(|e| Error::config("tokenizer", format!("the GPT-2 tokenizer has no token {id}: {e}")))?;
            bytes.extend_from_slice(&token);
            ends.push(bytes.len());
        }
        Ok(Tokenizer {
            source: PathBuf::from("GPT-2 BPE (r50k_base)"),
            bytes,
            ends,
            eot_token: GPT2_EOT_TOKEN,
            bpe: Some(bpe),
        })
    }

    /// Reads llm.c's `tokenizer.bin` at `path` (version 1 or 2). The result decodes but cannot encode.
    pub fn from_llmc_file(path: &Path) -> Result<Self> {
        let data = std::fs::read(path).map_err(|e| Error::io("cannot read tokenizer file", path, e))?;
        let header_bytes = 256 * 4;
        if data.len() < header_bytes {
            return Err(Error::format(
                path,
                "file size (an llm.c tokenizer header is 256 uint32)",
                format!("at least {header_bytes} bytes"),
                format!("{} bytes", data.len()),
            ));
        }
        let (header, table) = data.split_at(header_bytes);
        let header: [u32; 256] = bytemuck::pod_read_unaligned(header);
        if header[0] != TOKENIZER_MAGIC {
            return Err(Error::format(
                path,
                "magic number (header[0]) of an llm.c tokenizer file",
                TOKENIZER_MAGIC,
                header[0],
            ));
        }
        let vocab_size = header[2] as usize;
        let eot_token = match header[1] {
            // Version 1 predates header[3]; llm.c only ever wrote it for GPT-2's vocabulary.
            1 if vocab_size == GPT2_VOCAB_SIZE => GPT2_EOT_TOKEN,
            1 => {
                return Err(Error::format(
                    path,
                    "vocab size (header[2]) of a version-1 file, which has no EOT field",
                    GPT2_VOCAB_SIZE,
                    vocab_size,
                ))
            }
            2 => header[3],
            other => return Err(Error::format(path, "version (header[1])", "1 or 2", other)),
        };
        if eot_token as usize >= vocab_size {
            return Err(Error::format(
                path,
                "EOT token id (header[3])",
                format!("below the vocab size {vocab_size}"),
                eot_token,
            ));
        }

        let mut bytes = Vec::with_capacity(table.len());
        // header[2] may claim billions of tokens; an entry takes at least 2 bytes (its length and one byte), so the
        // table holds at most table.len() / 2 of them, and more are refused below when the table runs out.
        let mut ends = Vec::with_capacity(vocab_size.min(table.len() / 2));
        let mut rest = table;
        for id in 0..vocab_size {
            let truncated = || {
                Error::format(
                    path,
                    format!("token table ({vocab_size} tokens, header[2])"),
                    format!("{vocab_size} entries"),
                    format!("the file ends inside entry {id}"),
                )
            };
            let (&len, tail) = rest.split_first().ok_or_else(truncated)?;
            if len == 0 {
                return Err(Error::format(path, format!("length of token {id}"), "1 to 255 bytes", "0"));
            }
            let token = tail.get(..len as usize).ok_or_else(truncated)?;
            bytes.extend_from_slice(token);
            ends.push(bytes.len());
            rest = &tail[len as usize..];
        }
        if !rest.is_empty() {
            return Err(Error::format(
                path,
                format!("bytes after the last of {vocab_size} tokens (header[2])"),
                "none",
                rest.len(),
            ));
        }
        Ok(Tokenizer { source: path.to_path_buf(), bytes, ends, eot_token, bpe: None })
    }

    /// The tokens of `text`. Special-token text such as "<|endoftext|>" is encoded as ordinary text; append
    /// `eot_token()` explicitly where a document ends. Fails for tokenizers read from an llm.c file.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match &self.bpe {
            Some(bpe) => Ok(bpe.encode_ordinary(text)),
            // A byte-level vocabulary (`llmrs prepare --tokenizer bytes`) encodes without merges: a byte is a token.
            None if self.is_byte_level() => Ok(text.bytes().map(u32::from).collect()),
            None => Err(Error::config(
                "tokenizer",
                format!(
                    "{} is an llm.c tokenizer file, which maps tokens to text but holds no BPE merges to map text \
                     to tokens; use the built-in GPT-2 tokenizer to encode",
                    self.source.display()
                ),
            )),
        }
    }

    /// The text of `tokens`: their bytes concatenated, invalid UTF-8 replaced by U+FFFD, ids outside the
    /// vocabulary shown as `<|unk ID|>`.
    pub fn decode(&self, tokens: &[u32]) -> String {
        let mut out = Vec::with_capacity(tokens.len() * 4);
        for &id in tokens {
            match self.token_bytes(id) {
                Some(bytes) => out.extend_from_slice(bytes),
                None => out.extend_from_slice(format!("<|unk {id}|>").as_bytes()),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The raw bytes of token `id`, or None outside the vocabulary.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        let id = id as usize;
        let end = *self.ends.get(id)?;
        let start = if id == 0 { 0 } else { self.ends[id - 1] };
        Some(&self.bytes[start..end])
    }

    /// Whether this is a byte-level vocabulary: 256 tokens, token i the single byte i (the EOT token aside).
    pub fn is_byte_level(&self) -> bool {
        self.vocab_size() == 256
            && (0..256u32).all(|id| id == self.eot_token || self.token_bytes(id) == Some(&[id as u8][..]))
    }

    /// The id that separates documents (`<|endoftext|>` for GPT-2).
    pub fn eot_token(&self) -> u32 {
        self.eot_token
    }

    /// V: ids 0..V decode to text.
    pub fn vocab_size(&self) -> usize {
        self.ends.len()
    }

    /// Where the vocabulary came from, for messages.
    pub fn source(&self) -> &Path {
        &self.source
    }
}
