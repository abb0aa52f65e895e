//! docs/bad_inputs.md names, for every bad input in its tables, the test that checks the message. This keeps the
//! table honest as tests are renamed or removed: every test it names must exist, as a `#[test]` function, in the
//! file it names.

use std::path::Path;

/// The `tests/FILE::NAME` references in one table cell, each written in backticks.
fn test_references(cell: &str) -> Vec<(&str, &str)> {
    cell.split('`').skip(1).step_by(2).filter_map(|quoted| quoted.split_once("::")).collect()
}

/// Whether `source` defines `fn name()` under a `#[test]` attribute (other attributes and comments may sit between).
fn defines_test(source: &str, name: &str) -> bool {
    let lines: Vec<&str> = source.lines().collect();
    let signature = format!("fn {name}()");
    lines.iter().enumerate().filter(|(_, line)| line.trim_start().starts_with(&signature)).any(|(i, _)| {
        lines[..i]
            .iter()
            .rev()
            .map(|line| line.trim())
            .take_while(|line| line.starts_with("#[") || line.starts_with("//"))
            .any(|line| line == "#[test]")
    })
}

#[test]
fn every_test_the_bad_inputs_table_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/bad_inputs.md")).expect("docs/bad_inputs.md exists");
    let rows: Vec<&str> = doc
        .lines()
        .filter(|line| line.starts_with('|') && !line.starts_with("|---") && !line.starts_with("| input |"))
        .collect();
    // The tables held about a hundred rows when this test was written; far fewer means the parsing broke.
    assert!(rows.len() >= 40, "expected the tables' rows, found {}", rows.len());
    let mut missing = Vec::new();
    for row in rows {
        let cells: Vec<&str> = row.trim_matches('|').split(" | ").collect();
        assert_eq!(cells.len(), 4, "a row has 4 cells (input, what was wrong, message, test): {row}");
        let tests = test_references(cells[3]);
        assert!(!tests.is_empty(), "the row names no test as `tests/FILE.rs::NAME`: {row}");
        for (file, name) in tests {
            assert!(file.starts_with("tests/") && file.ends_with(".rs"), "not a test file: {file} in {row}");
            let source = std::fs::read_to_string(root.join(file)).unwrap_or_default();
            if !defines_test(&source, name) {
                missing.push(format!("{file}::{name}"));
            }
        }
    }
    assert!(missing.is_empty(), "docs/bad_inputs.md names tests that do not exist: {missing:?}");
}
