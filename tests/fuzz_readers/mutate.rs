//! Mutations of valid files, as proptest strategies: a case is a seed (a valid set of files, made by the writers)
//! and a short list of `Mutation`s applied to it in order. Shrinking removes mutations and moves their positions
//! toward the start, so a failure is reported as the few edits that break the reader.
//!
//! Byte-level edits (flip, set, insert, remove, truncate, extend, replace) find what a damaged file does; header
//! edits write extreme int32 values (0, -1, i32::MAX, sizes whose products overflow, other formats' magics) over
//! the first 16 fields, where every llm.c format keeps its sizes; JSON edits replace or remove one value of a JSON
//! file, of one line of a JSON-lines file, or of a safetensors header, keeping the rest valid so the edit reaches
//! the code past the parser.

use proptest::prelude::*;
use proptest::sample::{select, Index};
use serde_json::Value;

#[derive(Debug, Clone)]
pub enum Mutation {
    FlipBit {
        part: usize,
        at: Index,
        bit: u8,
    },
    SetByte {
        part: usize,
        at: Index,
        value: u8,
    },
    /// int32 number `field` (0..16) of the header.
    SetHeaderInt {
        part: usize,
        field: usize,
        value: i32,
    },
    /// An int32 at any offset.
    SetInt {
        part: usize,
        at: Index,
        value: i32,
    },
    Truncate {
        part: usize,
        at: Index,
    },
    Extend {
        part: usize,
        bytes: Vec<u8>,
    },
    Remove {
        part: usize,
        at: Index,
        len: usize,
    },
    Insert {
        part: usize,
        at: Index,
        bytes: Vec<u8>,
    },
    /// The whole file replaced by random bytes.
    Replace {
        part: usize,
        bytes: Vec<u8>,
    },
    /// One JSON value replaced (`Some`) or removed (`None`).
    EditJson {
        part: usize,
        at: Index,
        value: Option<&'static str>,
    },
}

/// Values that break size arithmetic or look like another field: zero, one, negative, int32 extremes, square roots
/// and powers of two whose products overflow 32 bits, GPT-2's sizes and every llm.c magic number.
const INTERESTING_I32: &[i32] = &[
    0,
    1,
    2,
    3,
    -1,
    -2,
    i32::MAX,
    i32::MAX - 1,
    i32::MIN,
    46_341, // ceil(sqrt(2^31))
    65_535,
    65_536,
    1 << 24,
    1 << 30,
    50_257,
    50_304,
    20_240_326, // model magic
    20_240_328, // tokenizer magic
    20_240_520, // shard magic
    20_261_128, // optimizer magic
];

/// JSON values that break sizes, types or ranges.
const INTERESTING_JSON: &[&str] = &[
    "null",
    "true",
    "false",
    "0",
    "1",
    "2",
    "-1",
    "-0",
    "0.5",
    "1e308",
    "-1e308",
    "65536",
    "16777216",
    "2147483647",
    "2147483648",
    "4294967296",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "\"\"",
    "\"gpt2\"",
    "\"F16\"",
    "\"BF16\"",
    "\"I64\"",
    "\"gelu_new\"",
    "[]",
    "[0]",
    "[1, 1]",
    "[0, 18446744073709551615]",
    "[2147483647, 2147483647]",
    "[46341, 46341, 46341]",
    "{}",
];

fn interesting_i32() -> impl Strategy<Value = i32> {
    prop_oneof![3 => select(INTERESTING_I32), 1 => any::<i32>()]
}

/// Mutations of an input of `parts` files.
pub fn mutation(parts: usize) -> impl Strategy<Value = Mutation> {
    let part = 0..parts;
    let json_value = proptest::option::weighted(0.9, select(INTERESTING_JSON));
    prop_oneof![
        3 => (part.clone(), any::<Index>(), 0..8u8).prop_map(|(part, at, bit)| Mutation::FlipBit { part, at, bit }),
        2 => (part.clone(), any::<Index>(), any::<u8>())
            .prop_map(|(part, at, value)| Mutation::SetByte { part, at, value }),
        4 => (part.clone(), 0..16usize, interesting_i32())
            .prop_map(|(part, field, value)| Mutation::SetHeaderInt { part, field, value }),
        2 => (part.clone(), any::<Index>(), interesting_i32())
            .prop_map(|(part, at, value)| Mutation::SetInt { part, at, value }),
        2 => (part.clone(), any::<Index>()).prop_map(|(part, at)| Mutation::Truncate { part, at }),
        1 => (part.clone(), prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(part, bytes)| Mutation::Extend { part, bytes }),
        1 => (part.clone(), any::<Index>(), 1..64usize).prop_map(|(part, at, len)| Mutation::Remove { part, at, len }),
        1 => (part.clone(), any::<Index>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(part, at, bytes)| Mutation::Insert { part, at, bytes }),
        1 => (part.clone(), prop::collection::vec(any::<u8>(), 0..2048))
            .prop_map(|(part, bytes)| Mutation::Replace { part, bytes }),
        4 => (part, any::<Index>(), json_value).prop_map(|(part, at, value)| Mutation::EditJson { part, at, value }),
    ]
}

/// `at` as a position in `0..len` (0 when there is none).
fn pos(at: &Index, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        at.index(len)
    }
}

/// `seed` with `mutations` applied in order.
pub fn apply(seed: &[Vec<u8>], mutations: &[Mutation]) -> Vec<Vec<u8>> {
    let mut parts = seed.to_vec();
    for mutation in mutations {
        match mutation {
            &Mutation::FlipBit { part, ref at, bit } => {
                let file = &mut parts[part];
                if !file.is_empty() {
                    let i = pos(at, file.len());
                    file[i] ^= 1 << bit;
                }
            }
            &Mutation::SetByte { part, ref at, value } => {
                let file = &mut parts[part];
                if !file.is_empty() {
                    let i = pos(at, file.len());
                    file[i] = value;
                }
            }
            &Mutation::SetHeaderInt { part, field, value } => write_i32(&mut parts[part], 4 * field, value),
            &Mutation::SetInt { part, ref at, value } => {
                let file = &mut parts[part];
                let i = pos(at, file.len());
                write_i32(file, i, value);
            }
            &Mutation::Truncate { part, ref at } => {
                let file = &mut parts[part];
                let i = pos(at, file.len());
                file.truncate(i);
            }
            Mutation::Extend { part, bytes } => parts[*part].extend_from_slice(bytes),
            &Mutation::Remove { part, ref at, len } => {
                let file = &mut parts[part];
                let i = pos(at, file.len());
                let end = (i + len).min(file.len());
                file.drain(i..end);
            }
            Mutation::Insert { part, at, bytes } => {
                let file = &mut parts[*part];
                let i = pos(at, file.len() + 1);
                file.splice(i..i, bytes.iter().copied());
            }
            Mutation::Replace { part, bytes } => parts[*part] = bytes.clone(),
            &Mutation::EditJson { part, ref at, value } => edit_json(&mut parts[part], at, value),
        }
    }
    parts
}

/// Writes `value` little-endian at byte `offset`, extending the file with zeros when it is shorter.
fn write_i32(file: &mut Vec<u8>, offset: usize, value: i32) {
    if file.len() < offset + 4 {
        file.resize(offset + 4, 0);
    }
    file[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

/// Replaces (or removes) one value of the JSON in `file`: the whole file when it is JSON, else the header of a
/// safetensors file, else one line of a JSON-lines file. Leaves other files alone.
fn edit_json(file: &mut Vec<u8>, at: &Index, value: Option<&str>) {
    if let Ok(mut json) = serde_json::from_slice::<Value>(file) {
        edit_value(&mut json, at, value);
        *file = serde_json::to_vec(&json).expect("a Value serializes");
        return;
    }
    if let Some((header_len, rest)) = file.split_first_chunk::<8>() {
        let header_len = u64::from_le_bytes(*header_len);
        if let Some(header) = usize::try_from(header_len).ok().and_then(|n| rest.get(..n)) {
            if let Ok(mut json) = serde_json::from_slice::<Value>(header) {
                edit_value(&mut json, at, value);
                let header = serde_json::to_vec(&json).expect("a Value serializes");
                let data = &rest[header_len as usize..];
                let mut edited = (header.len() as u64).to_le_bytes().to_vec();
                edited.extend_from_slice(&header);
                edited.extend_from_slice(data);
                *file = edited;
                return;
            }
        }
    }
    let mut lines: Vec<Vec<u8>> = file.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    let line = pos(at, lines.len());
    if let Ok(mut json) = serde_json::from_slice::<Value>(&lines[line]) {
        edit_value(&mut json, at, value);
        lines[line] = serde_json::to_vec(&json).expect("a Value serializes");
        *file = lines.join(&b'\n');
    }
}

/// Replaces (or removes) the value at one of `json`'s JSON pointers, chosen by `at`.
fn edit_value(json: &mut Value, at: &Index, value: Option<&str>) {
    let mut pointers = Vec::new();
    collect_pointers(json, String::new(), &mut pointers);
    let pointer = &pointers[pos(at, pointers.len())];
    let new = value.map(|v| serde_json::from_str::<Value>(v).expect("INTERESTING_JSON holds JSON"));
    match new {
        Some(new) => *json.pointer_mut(pointer).expect("a collected pointer") = new,
        None if pointer.is_empty() => *json = Value::Null,
        None => {
            let (parent, key) = pointer.rsplit_once('/').expect("a non-root pointer has a parent");
            match json.pointer_mut(parent).expect("a collected pointer") {
                Value::Object(map) => {
                    map.remove(&key.replace("~1", "/").replace("~0", "~"));
                }
                Value::Array(items) => {
                    items.remove(key.parse::<usize>().expect("an array index"));
                }
                _ => unreachable!("the parent of a pointer is a container"),
            }
        }
    }
}

/// Every JSON pointer into `json`, parents before children (the root is "").
fn collect_pointers(json: &Value, pointer: String, out: &mut Vec<String>) {
    out.push(pointer.clone());
    match json {
        Value::Object(map) => {
            for (key, child) in map {
                let key = key.replace('~', "~0").replace('/', "~1");
                collect_pointers(child, format!("{pointer}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                collect_pointers(child, format!("{pointer}/{i}"), out);
            }
        }
        _ => {}
    }
}
