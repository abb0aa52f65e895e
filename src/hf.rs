//! Hugging Face GPT-2 checkpoints (`config.json` + `model.safetensors`) into llm.c's layout, so OpenAI's released
//! GPT-2 weights, or any GPT-2 saved with transformers' `save_pretrained`, can be evaluated and fine-tuned here.
//!
//! The two formats hold the same model in different arrangements, and this module is the map between them:
//!
//! - Names: HF's `h.{l}.attn.c_attn.weight` is layer `l` of llm.c's `qkvw`; every per-layer tensor is stacked over
//!   L in llm.c. Names may carry a `transformer.` prefix (GPT2LMHeadModel) or not (GPT2Model, the hub's `gpt2`).
//! - Shapes: HF's GPT-2 uses `Conv1D`, whose weights are stored (in, out); llm.c stores (out, in), so c_attn,
//!   attn.c_proj, c_fc and mlp.c_proj are transposed. wte (V, C) becomes (Vp, C) with zero padding rows.
//! - Ignored: the `attn.bias` / `attn.masked_bias` buffers (the causal mask, which llm.c computes), and
//!   `lm_head.weight`, which must equal wte: llm.c ties the classifier to the token embeddings.
//!
//! Whatever llm.c's GPT-2 cannot compute is refused rather than silently approximated: another activation,
//! another LayerNorm epsilon, a different MLP width, other attention scalings, untied embeddings, cross-attention,
//! extra tensors. Tensors may be F32, F16 or BF16 and are widened to f32 exactly.
//!
//! The weights file is read whole into memory (its own size), checked by the `safetensors` crate (header bounds,
//! offsets that tile the data exactly), and every tensor is checked for presence, shape and dtype before the
//! output buffer is allocated, so a config.json that claims a huge model cannot make us allocate for it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};
use serde_json::{Map, Value};

use crate::config::{padded_vocab, GPT2Config};
use crate::error::{Error, Result};
use crate::layout::ParamTensors;

/// The file names `save_pretrained` writes in a model directory.
pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Written by `save_pretrained` instead of `model.safetensors` when a model is split into shards.
const SHARDED_INDEX_FILE: &str = "model.safetensors.index.json";

/// The prefix GPT2LMHeadModel puts before the transformer's tensors (GPT2Model has none).
const PREFIX: &str = "transformer.";

/// The activations that are llm.c's GELU, tanh approximation: `gelu_new` (GPT-2's own) and
/// `gelu_pytorch_tanh` (the same formula through torch's `gelu(approximate="tanh")`).
const TANH_GELU: &[&str] = &["gelu_new", "gelu_pytorch_tanh"];

/// The largest size config.json may give: llm.c's header stores sizes as int32.
const MAX_SIZE: u64 = i32::MAX as u64;

/// llm.c's LayerNorm epsilon.
const LAYER_NORM_EPS: f64 = 1e-5;

/// How close (relative) `layer_norm_epsilon` must be to 1e-5: a value written from an f32 still counts.
const EPS_REL_TOLERANCE: f64 = 1e-6;

/// Where a Hugging Face model's two files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfPaths {
    pub config: PathBuf,
    pub weights: PathBuf,
}

impl HfPaths {
    /// `dir/config.json` and `dir/model.safetensors`, as `save_pretrained` lays them out.
    pub fn in_dir(dir: &Path) -> Self {
        HfPaths { config: dir.join(CONFIG_FILE), weights: dir.join(WEIGHTS_FILE) }
    }

    /// From the command line: one model directory, or the config file and then the weights file.
    pub fn from_inputs(inputs: &[PathBuf]) -> Result<Self> {
        match inputs {
            [dir] if dir.is_dir() => {
                let paths = HfPaths::in_dir(dir);
                let index = dir.join(SHARDED_INDEX_FILE);
                if !paths.weights.exists() && index.exists() {
                    return Err(Error::format(
                        dir,
                        "weights",
                        format!("one {WEIGHTS_FILE}"),
                        format!("sharded weights ({SHARDED_INDEX_FILE}), which import-hf does not merge"),
                    ));
                }
                Ok(paths)
            }
            [other] => Err(Error::config(
                "import-hf input",
                format!("{} is not a directory: give a model directory, or CONFIG WEIGHTS", other.display()),
            )),
            [config, weights] => Ok(HfPaths { config: config.clone(), weights: weights.clone() }),
            _ => Err(Error::config(
                "import-hf input",
                format!("expected a model directory or CONFIG WEIGHTS, found {} paths", inputs.len()),
            )),
        }
    }
}

/// Reads a Hugging Face GPT-2 and returns its llm.c shape and its parameters in llm.c's order
/// (`config.num_parameters()` of them, wte padded to Vp rows with zeros).
pub fn import(paths: &HfPaths) -> Result<(GPT2Config, Vec<f32>)> {
    let config = read_config(&paths.config)?;
    let params = read_weights(&paths.weights, &config)?;
    Ok((config, params))
}

/// Reads `config.json` and returns the llm.c shape it describes, refusing every setting llm.c's GPT-2 cannot
/// compute. Keys that are absent take transformers' GPT2Config defaults, except the five sizes, which must be there.
pub fn read_config(path: &Path) -> Result<GPT2Config> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("cannot read Hugging Face config", path, e))?;
    let json: Value = serde_json::from_slice(&bytes).map_err(|e| {
        Error::format(path, "contents", "JSON (a Hugging Face config.json)", format!("invalid JSON: {e}"))
    })?;
    let Value::Object(keys) = json else {
        return Err(Error::format(path, "contents", "a JSON object", json_kind(&json)));
    };
    let json = ConfigJson { path, keys };

    if let Some(model_type) = json.string("model_type")? {
        if model_type != "gpt2" {
            return Err(json.refuse("model_type", "\"gpt2\"", format!("{model_type:?}")));
        }
    }
    let vocab_size = json.size("vocab_size")?;
    let max_seq_len = json.size("n_positions")?;
    let channels = json.size("n_embd")?;
    let num_layers = json.size("n_layer")?;
    let num_heads = json.size("n_head")?;
    if channels % num_heads != 0 {
        return Err(json.refuse("n_embd", format!("a multiple of n_head ({num_heads})"), channels));
    }

    let activation = json.string("activation_function")?.unwrap_or_else(|| TANH_GELU[0].to_string());
    if !TANH_GELU.contains(&activation.as_str()) {
        return Err(json.refuse(
            "activation_function",
            format!("{} (tanh GELU, llm.c's only activation)", TANH_GELU.join(" or ")),
            format!("{activation:?}"),
        ));
    }
    match json.keys.get("n_inner") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_u64() == Some(4 * channels as u64) => {}
        Some(other) => {
            return Err(json.refuse(
                "n_inner",
                format!("null or 4 * n_embd = {} (llm.c's MLP width)", 4 * channels),
                other,
            ))
        }
    }
    let eps = json.number("layer_norm_epsilon")?.unwrap_or(LAYER_NORM_EPS);
    if (eps - LAYER_NORM_EPS).abs() > LAYER_NORM_EPS * EPS_REL_TOLERANCE {
        return Err(json.refuse("layer_norm_epsilon", "1e-5 (llm.c's LayerNorm)", eps));
    }
    // (key, the value llm.c's attention and embeddings need, which is also transformers' default, why)
    let flags = [
        ("scale_attn_weights", true, "llm.c scales attention scores by 1/sqrt(HS)"),
        ("scale_attn_by_inverse_layer_idx", false, "llm.c does not scale scores by layer"),
        ("reorder_and_upcast_attn", false, "llm.c has no such attention variant"),
        ("tie_word_embeddings", true, "llm.c's classifier is wte"),
        ("add_cross_attention", false, "llm.c's GPT-2 has no cross-attention"),
    ];
    for (key, needed, why) in flags {
        let value = json.boolean(key)?.unwrap_or(needed);
        if value != needed {
            return Err(json.refuse(key, format!("{needed} ({why})"), value));
        }
    }

    let config = GPT2Config {
        max_seq_len,
        vocab_size,
        padded_vocab_size: padded_vocab(vocab_size),
        num_layers,
        num_heads,
        channels,
    };
    config.validate(&format!("model config from {}", path.display()))?;
    Ok(config)
}

/// The keys of a config.json, with accessors whose errors name the file and the key.
struct ConfigJson<'a> {
    path: &'a Path,
    keys: Map<String, Value>,
}

impl ConfigJson<'_> {
    /// An error: `key` should be `expected` but the file has `found`.
    fn refuse(&self, key: &str, expected: impl ToString, found: impl ToString) -> Error {
        Error::format(self.path, format!("key `{key}`"), expected, found)
    }

    /// A size that must be present: a positive integer that fits llm.c's int32 header (so no arithmetic on it
    /// can overflow).
    fn size(&self, key: &str) -> Result<usize> {
        let expected = || format!("a positive integer up to {}", i32::MAX);
        match self.keys.get(key) {
            None => Err(self.refuse(key, format!("present ({})", expected()), "no such key")),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(size @ 1..=MAX_SIZE) => Ok(size as usize),
                _ => Err(self.refuse(key, expected(), n)),
            },
            Some(other) => Err(self.refuse(key, expected(), other)),
        }
    }

    /// An optional string (null counts as absent).
    fn string(&self, key: &str) -> Result<Option<String>> {
        match self.keys.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.refuse(key, "a string", other)),
        }
    }

    /// An optional number (null counts as absent).
    fn number(&self, key: &str) -> Result<Option<f64>> {
        match self.keys.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(other) => Err(self.refuse(key, "a number", other)),
        }
    }

    /// An optional boolean (null counts as absent).
    fn boolean(&self, key: &str) -> Result<Option<bool>> {
        match self.keys.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.refuse(key, "true or false", other)),
        }
    }
}

/// What kind of JSON value `v` is, for messages.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One Hugging Face tensor and where it goes in llm.c's flat parameter buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    /// HF name without the `transformer.` prefix.
    name: String,
    /// HF shape.
    shape: Vec<usize>,
    /// Conv1D weight stored (in, out) = `shape`, which llm.c stores (out, in).
    transpose: bool,
    /// First element in the flat buffer.
    offset: usize,
}

impl Slot {
    fn copy(name: String, shape: &[usize], offset: usize) -> Self {
        Slot { name, shape: shape.to_vec(), transpose: false, offset }
    }

    fn transposed(name: String, shape: &[usize], offset: usize) -> Self {
        Slot { name, shape: shape.to_vec(), transpose: true, offset }
    }

    fn len(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Every HF tensor llm.c needs, with its place in the llm.c buffer of `config`, in buffer order.
fn slots(config: &GPT2Config) -> Vec<Slot> {
    let (v, max_t, l_count, c) = (config.vocab_size, config.max_seq_len, config.num_layers, config.channels);
    let at = ParamTensors::sizes(config).offsets();
    // wte: (V, C) into (Vp, C); rows V..Vp stay zero. wpe: (maxT, C).
    let mut slots =
        vec![Slot::copy("wte.weight".into(), &[v, c], at.wte), Slot::copy("wpe.weight".into(), &[max_t, c], at.wpe)];
    for l in 0..l_count {
        let h = |name: &str| format!("h.{l}.{name}");
        slots.extend([
            Slot::copy(h("ln_1.weight"), &[c], at.ln1w + l * c), // ln1w (L, C)
            Slot::copy(h("ln_1.bias"), &[c], at.ln1b + l * c),   // ln1b (L, C)
            Slot::transposed(h("attn.c_attn.weight"), &[c, 3 * c], at.qkvw + l * 3 * c * c), // qkvw (L, 3C, C)
            Slot::copy(h("attn.c_attn.bias"), &[3 * c], at.qkvb + l * 3 * c), // qkvb (L, 3C)
            Slot::transposed(h("attn.c_proj.weight"), &[c, c], at.attprojw + l * c * c), // attprojw (L, C, C)
            Slot::copy(h("attn.c_proj.bias"), &[c], at.attprojb + l * c), // attprojb (L, C)
            Slot::copy(h("ln_2.weight"), &[c], at.ln2w + l * c), // ln2w (L, C)
            Slot::copy(h("ln_2.bias"), &[c], at.ln2b + l * c),   // ln2b (L, C)
            Slot::transposed(h("mlp.c_fc.weight"), &[c, 4 * c], at.fcw + l * 4 * c * c), // fcw (L, 4C, C)
            Slot::copy(h("mlp.c_fc.bias"), &[4 * c], at.fcb + l * 4 * c), // fcb (L, 4C)
            Slot::transposed(h("mlp.c_proj.weight"), &[4 * c, c], at.fcprojw + l * c * 4 * c), // fcprojw (L, C, 4C)
            Slot::copy(h("mlp.c_proj.bias"), &[c], at.fcprojb + l * c), // fcprojb (L, C)
        ]);
    }
    slots.extend([Slot::copy("ln_f.weight".into(), &[c], at.lnfw), Slot::copy("ln_f.bias".into(), &[c], at.lnfb)]);
    // Listed layer by layer above; llm.c's buffer holds all layers' ln1w, then all ln1b, ...
    slots.sort_by_key(|s| s.offset);
    slots
}

/// Tensors of one transformer block in a Hugging Face GPT-2 (the slots of one layer in `slots`).
const TENSORS_PER_LAYER: usize = 12;

/// The classifier weights; present in some files, always equal to wte in GPT-2.
const LM_HEAD: &str = "lm_head.weight";

/// HF buffers of each attention layer that hold the causal mask, which llm.c computes instead.
const MASK_BUFFERS: &[&str] = &["attn.bias", "attn.masked_bias"];

/// Reads `model.safetensors` for a model of shape `config` into llm.c's flat parameter buffer.
pub fn read_weights(path: &Path, config: &GPT2Config) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("cannot read Hugging Face weights", path, e))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| {
        Error::format(
            path,
            "safetensors contents",
            "an 8-byte header length, a JSON header, then exactly the tensor bytes it lists",
            format!("{e}; the file is {} bytes (truncated, or not a safetensors file?)", bytes.len()),
        )
    })?;
    let tensors = Tensors::new(path, &file)?;

    // The list of slots has 12 per layer, and n_layer comes from config.json alone: a file too small for that
    // many layers is refused before the list is made (a few bytes of config must not cost gigabytes). Among the
    // slots of one layer more than the file can hold, some tensor is missing; `get` names the first.
    let layers_in_file = tensors.by_name.len() / TENSORS_PER_LAYER;
    if config.num_layers > layers_in_file {
        let checkable = GPT2Config { num_layers: layers_in_file + 1, ..*config };
        let first_error = slots(&checkable).iter().find_map(|slot| tensors.get(slot).err());
        return Err(first_error.unwrap_or_else(|| {
            Error::format(
                path,
                "number of tensors",
                format!("{TENSORS_PER_LAYER} per layer for n_layer = {} (config.json)", config.num_layers),
                tensors.by_name.len(),
            )
        }));
    }

    let slots = slots(config);
    let expected: HashMap<&str, &Slot> = slots.iter().map(|s| (s.name.as_str(), s)).collect();
    for name in tensors.by_name.keys() {
        let is_mask = name.strip_prefix("h.").and_then(|rest| rest.split_once('.')).is_some_and(|(l, rest)| {
            l.parse::<usize>().is_ok_and(|l| l < config.num_layers) && MASK_BUFFERS.contains(&rest)
        });
        if !expected.contains_key(name.as_str()) && !is_mask && name != LM_HEAD {
            return Err(Error::format(
                path,
                format!("tensor `{}`", tensors.full_name(name)),
                format!("only the tensors of a GPT-2 with L={} (llm.c has no place for others)", config.num_layers),
                "an extra tensor",
            ));
        }
    }
    // Check every tensor before allocating the output, whose size comes from config.json.
    for slot in &slots {
        tensors.get(slot)?;
    }

    let mut params = vec![0.0f32; config.num_parameters()];
    for slot in &slots {
        let values = tensors.get(slot)?;
        let out = &mut params[slot.offset..slot.offset + slot.len()];
        if slot.transpose {
            // (in, out) -> (out, in)
            let (rows_in, cols_out) = (slot.shape[0], slot.shape[1]);
            for (o, row) in out.chunks_exact_mut(rows_in).enumerate() {
                for (i, x) in row.iter_mut().enumerate() {
                    *x = values[i * cols_out + o];
                }
            }
        } else {
            out.copy_from_slice(&values);
        }
    }

    if tensors.by_name.contains_key(LM_HEAD) {
        let wte_slot = &slots[0];
        let lm_head = tensors.get(&Slot::copy(LM_HEAD.into(), &wte_slot.shape, 0))?;
        let wte = &params[..wte_slot.len()];
        if let Some(i) = lm_head.iter().zip(wte).position(|(a, b)| a.to_bits() != b.to_bits()) {
            let c = config.channels;
            return Err(Error::format(
                path,
                format!("tensor `{LM_HEAD}`"),
                format!(
                    "equal to `{}` (llm.c ties the classifier to the token embeddings)",
                    tensors.full_name("wte.weight")
                ),
                format!("{} instead of {} at row {}, column {}", lm_head[i], wte[i], i / c, i % c),
            ));
        }
    }
    Ok(params)
}

/// The tensors of one safetensors file, by name without the `transformer.` prefix.
struct Tensors<'a> {
    path: &'a Path,
    /// short name -> (name in the file, tensor)
    by_name: HashMap<String, (String, safetensors::tensor::TensorView<'a>)>,
}

impl<'a> Tensors<'a> {
    fn new(path: &'a Path, file: &SafeTensors<'a>) -> Result<Self> {
        let mut by_name = HashMap::new();
        for (full, view) in file.iter() {
            let short = full.strip_prefix(PREFIX).unwrap_or(full);
            if let Some((other, _)) = by_name.insert(short.to_string(), (full.to_string(), view)) {
                return Err(Error::format(
                    path,
                    format!("tensor `{short}`"),
                    "one tensor per name, with or without the `transformer.` prefix",
                    format!("both `{other}` and `{full}`"),
                ));
            }
        }
        Ok(Tensors { path, by_name })
    }

    /// The name as the file spells it (or, when it is missing, as GPT2LMHeadModel would).
    fn full_name(&self, short: &str) -> String {
        match self.by_name.get(short) {
            Some((full, _)) => full.clone(),
            None if short == LM_HEAD => short.to_string(),
            None => format!("{PREFIX}{short}"),
        }
    }

    /// The tensor of `slot`, widened to f32, after checking that it is there with the slot's shape.
    fn get(&self, slot: &Slot) -> Result<Vec<f32>> {
        let what = || format!("tensor `{}`", self.full_name(&slot.name));
        let Some((_, view)) = self.by_name.get(&slot.name) else {
            return Err(Error::format(self.path, what(), format!("present, shape {:?}", slot.shape), "missing"));
        };
        if view.shape() != slot.shape.as_slice() {
            let layout = if slot.transpose { " (Conv1D weights are stored (in, out))" } else { "" };
            return Err(Error::format(
                self.path,
                format!("shape of {}", what()),
                format!("{:?}{layout}", slot.shape),
                format!("{:?}", view.shape()),
            ));
        }
        // safetensors checked that the data is exactly shape x dtype bytes long.
        let data = view.data();
        let values = match view.dtype() {
            Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => data.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => data.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => {
                return Err(Error::format(
                    self.path,
                    format!("dtype of {}", what()),
                    "F32, F16 or BF16",
                    format!("{other:?}"),
                ))
            }
        };
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn odd_config() -> GPT2Config {
        GPT2Config {
            max_seq_len: 24,
            vocab_size: 389,
            padded_vocab_size: 512,
            num_layers: 3,
            num_heads: 3,
            channels: 48,
        }
    }

    #[test]
    fn slots_cover_every_parameter_once_except_wte_padding() {
        let config = odd_config();
        let mut writes = vec![0u8; config.num_parameters()];
        for slot in slots(&config) {
            for w in &mut writes[slot.offset..slot.offset + slot.len()] {
                *w += 1;
            }
        }
        let padding = config.vocab_size * config.channels..config.padded_vocab_size * config.channels;
        for (i, &w) in writes.iter().enumerate() {
            let expected = if padding.contains(&i) { 0 } else { 1 };
            assert_eq!(w, expected, "parameter {i} written {w} times");
        }
    }

    #[test]
    fn slots_are_in_llm_c_buffer_order() {
        let slots = slots(&odd_config());
        assert_eq!(slots[0].name, "wte.weight");
        assert_eq!(slots[1].name, "wpe.weight");
        assert_eq!(slots[2].name, "h.0.ln_1.weight");
        assert_eq!(slots[3].name, "h.1.ln_1.weight");
        assert_eq!(slots.last().unwrap().name, "ln_f.bias");
    }

    #[test]
    fn exactly_the_conv1d_weights_are_transposed() {
        let transposed: Vec<String> =
            slots(&odd_config()).into_iter().filter(|s| s.transpose).map(|s| s.name).collect();
        let mut expected = Vec::new();
        for name in ["attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"] {
            expected.extend((0..3).map(|l| format!("h.{l}.{name}")));
        }
        let mut sorted = transposed.clone();
        sorted.sort();
        expected.sort();
        assert_eq!(sorted, expected);
    }
}
