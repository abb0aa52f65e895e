//! `llmrs::plot` and `llmrs plot`: small metrics.jsonl files written here must give an SVG that holds every series
//! of every run (checked by counting the points of its polylines and its val dots), and bad input must fail with one
//! line naming the file (and line), never with a panic.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use llmrs::metrics::RunMetrics;
use llmrs::plot::{plot_metrics, plot_runs};
use tempfile::TempDir;

/// A synthetic run: `steps` step lines (loss falling from 10 to about 0.5, gradient norm 1, 2, 3, 1, ...) and an
/// evaluation every `val_every` steps (and after the last), as `train_gpt2 --out` writes them.
fn metrics(steps: usize, val_every: usize) -> String {
    metrics_with(steps, val_every, |step| 0.5 + 9.5 * (-(step as f64) / 5.0).exp(), |step| 1.0 + (step % 3) as f64)
}

/// `metrics` with the train loss (val loss 0.1 above it) and the gradient norm at each step given.
fn metrics_with(steps: usize, val_every: usize, loss: fn(usize) -> f64, norm: fn(usize) -> f64) -> String {
    let mut text = String::new();
    for step in 0..=steps {
        let (loss, norm) = (loss(step), norm(step));
        if step % val_every == 0 || step == steps {
            writeln!(text, r#"{{"step":{step},"val_loss":{}}}"#, loss + 0.1).unwrap();
        }
        if step < steps {
            let lr = 1e-3 * (1.0 - step as f64 / steps as f64 / 2.0);
            writeln!(
                text,
                r#"{{"step":{step},"train_loss":{loss},"lr":{lr},"grad_norm":{norm},"ms":10.5,"tokens_per_sec":800.0}}"#
            )
            .unwrap();
        }
    }
    text
}

/// Evaluations `metrics(steps, val_every)` writes.
fn evals(steps: usize, val_every: usize) -> usize {
    steps / val_every + 1 + usize::from(steps % val_every != 0)
}

/// Writes `text` as `dir/name/metrics.jsonl` and returns the run directory.
fn write_run(dir: &Path, name: &str, text: &str) -> PathBuf {
    let run = dir.join(name);
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("metrics.jsonl"), text).unwrap();
    run
}

/// Plots `runs` into `dir/plot.svg` and returns the SVG text.
fn plot(dir: &Path, runs: &[PathBuf]) -> String {
    let out = dir.join("plot.svg");
    plot_runs(runs, &out).unwrap_or_else(|e| panic!("plotting {runs:?} failed: {e}"));
    std::fs::read_to_string(out).unwrap()
}

/// The error message of plotting `runs` into `out`, which must fail.
fn plot_error(runs: &[PathBuf], out: &Path) -> String {
    match plot_runs(runs, out) {
        Ok(()) => panic!("plotting {runs:?} into {} should fail", out.display()),
        Err(e) => e.to_string(),
    }
}

/// Value of attribute `name` in the tag text `tag`.
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    Some(&tag[start..start + tag[start..].find('"')?])
}

/// Every `<name .../>` tag of `svg`.
fn tags<'a>(svg: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    svg.split('<').skip(1).filter(move |t| t.starts_with(name) && t[name.len()..].starts_with(' '))
}

/// (stroke colour, number of points) of each polyline.
fn polylines(svg: &str) -> Vec<(String, usize)> {
    tags(svg, "polyline")
        .map(|t| {
            let points = attribute(t, "points").unwrap_or_default().split_whitespace().count();
            (attribute(t, "stroke").unwrap_or_default().to_string(), points)
        })
        .collect()
}

/// Colours of the polylines with exactly `points` points.
fn colours_of_lines_with(svg: &str, points: usize) -> Vec<String> {
    polylines(svg).into_iter().filter(|&(_, n)| n == points).map(|(colour, _)| colour).collect()
}

/// Fails unless `svg` is one `<svg>` element whose tags all open and close in order.
fn assert_well_formed(svg: &str) {
    assert!(svg.starts_with("<svg "), "the SVG should start with <svg: {:?}", &svg[..svg.len().min(80)]);
    let mut open = Vec::new();
    for (i, tag) in svg.split('<').skip(1).enumerate() {
        let tag = &tag[..tag.find('>').unwrap_or_else(|| panic!("tag {i} has no '>'"))];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(open.pop(), Some(name), "closing tag {i} </{name}> does not match");
        } else if !tag.ends_with('/') {
            open.push(tag.split_whitespace().next().unwrap());
        }
        if open.is_empty() {
            assert!(svg.trim_end().ends_with(&format!("<{tag}>")), "content after the closing </svg>");
        }
    }
    assert!(open.is_empty(), "tags left open: {open:?}");
}

#[test]
fn one_run_gives_a_line_per_series_and_a_dot_per_evaluation() {
    let dir = TempDir::new().unwrap();
    let run = write_run(dir.path(), "d4-small", &metrics(30, 10));
    let svg = plot(dir.path(), &[run]);
    assert_well_formed(&svg);
    assert!(svg.contains("d4-small: val 0.6235 at step 30"), "the legend should name the run and its last val loss");
    let lines = colours_of_lines_with(&svg, 30);
    assert_eq!(lines.len(), 3, "train loss, learning rate and gradient norm should each be a 30-point line");
    assert!(lines.iter().all(|c| c == &lines[0]), "one run, one colour: {lines:?}");
    assert_eq!(tags(&svg, "circle").count(), evals(30, 10), "one dot per evaluation");
}

#[test]
fn several_runs_are_overlaid_in_distinct_colours_with_a_legend() {
    let dir = TempDir::new().unwrap();
    let a = write_run(dir.path(), "run-a", &metrics(30, 10));
    let b = write_run(dir.path(), "run-b", &metrics(45, 10));
    // One run given as its directory, the other as its file.
    let svg = plot(dir.path(), &[a, b.join("metrics.jsonl")]);
    assert_well_formed(&svg);
    for name in ["run-a: val", "run-b: val"] {
        assert!(svg.contains(name), "the legend should list {name:?}");
    }
    let (lines_a, lines_b) = (colours_of_lines_with(&svg, 30), colours_of_lines_with(&svg, 45));
    assert_eq!((lines_a.len(), lines_b.len()), (3, 3), "each run should draw its three line series");
    assert_ne!(lines_a[0], lines_b[0], "runs should differ in colour");
    assert_eq!(tags(&svg, "circle").count(), evals(30, 10) + evals(45, 10), "one dot per evaluation of each run");
}

#[test]
fn long_runs_draw_a_moving_average_over_the_faint_raw_loss() {
    let dir = TempDir::new().unwrap();
    let run = write_run(dir.path(), "long", &metrics(200, 50));
    let svg = plot(dir.path(), &[run]);
    let lines = tags(&svg, "polyline").filter(|t| attribute(t, "points").unwrap().split_whitespace().count() == 200);
    let opacities: Vec<&str> = lines.map(|t| attribute(t, "opacity").unwrap()).collect();
    assert_eq!(opacities.len(), 4, "raw and smoothed train loss, learning rate, gradient norm: {opacities:?}");
    assert_eq!(opacities.iter().filter(|&&o| o != "1").count(), 1, "only the raw train loss is faint");
    assert!(svg.contains("moving average"), "the caption should say the bold line is smoothed");
}

#[test]
fn loss_spanning_more_than_a_decade_is_drawn_on_a_log_axis() {
    let dir = TempDir::new().unwrap();
    let wide = write_run(dir.path(), "wide", &metrics(30, 10));
    assert!(
        plot(dir.path(), &[wide]).contains("loss (nats per token) (log scale)"),
        "10 -> 0.5 spans more than a decade"
    );
    let narrow = write_run(dir.path(), "narrow", &metrics_with(30, 10, |step| 3.0 + 1.0 / (step + 1) as f64, |_| 1.0));
    let svg = plot(dir.path(), &[narrow]);
    assert!(svg.contains("loss (nats per token)") && !svg.contains("token) (log scale)"), "3.03 .. 4.1 spans less");
}

#[test]
fn unknown_keys_and_lines_are_ignored_and_null_leaves_a_gap() {
    let text = concat!(
        "{\"kind\":\"resume\",\"from\":\"model.bin\"}\n",
        "{\"step\":0,\"train_loss\":10.0,\"lr\":0.001,\"grad_norm\":2.0,\"new_key\":[1,2]}\n",
        "{\"step\":1,\"skipped\":true}\n",
        "\n",
        "{\"step\":1,\"train_loss\":null,\"lr\":0.001,\"grad_norm\":null}\n",
        "{\"step\":2,\"train_loss\":9.0,\"lr\":0.001,\"grad_norm\":1.5}\n",
        "{\"step\":2,\"val_loss\":9.5}\n",
    );
    let run = RunMetrics::parse(Path::new("m.jsonl"), text.as_bytes()).unwrap();
    assert_eq!(run.steps.iter().map(|p| p.step).collect::<Vec<_>>(), [0, 1, 2], "step lines, in order");
    assert!(run.steps[1].train_loss.is_nan() && run.steps[1].grad_norm.is_nan(), "null reads as NaN");
    assert_eq!(run.evals.len(), 1);

    let dir = TempDir::new().unwrap();
    let svg = plot(dir.path(), &[write_run(dir.path(), "gappy", text)]);
    assert_eq!(colours_of_lines_with(&svg, 3).len(), 1, "the learning rate has no gap");
    assert_eq!(colours_of_lines_with(&svg, 1).len(), 4, "train loss and gradient norm split around the null");
}

#[test]
fn a_last_line_still_being_written_is_skipped() {
    let text = format!("{}{{\"step\":30,\"train_lo", metrics(30, 10));
    let run = RunMetrics::parse(Path::new("m.jsonl"), text.as_bytes()).unwrap();
    assert_eq!(run.steps.len(), 30);
}

#[test]
fn runs_sharing_a_name_are_told_apart_by_path() {
    let dir = TempDir::new().unwrap();
    let a = write_run(&dir.path().join("a"), "out", &metrics(30, 10));
    let b = write_run(&dir.path().join("b"), "out", &metrics(30, 10));
    let svg = plot(dir.path(), &[a, b]);
    for parent in ["a", "b"] {
        let path = dir.path().join(parent).join("out").join("metrics.jsonl");
        assert!(svg.contains(&path.display().to_string()), "the legend should show {}", path.display());
    }
}

#[test]
fn run_names_are_escaped_in_the_svg() {
    let dir = TempDir::new().unwrap();
    let svg = plot(dir.path(), &[write_run(dir.path(), "lr<1e-3&b=8", &metrics(30, 10))]);
    assert_well_formed(&svg);
    assert!(svg.contains("lr&lt;1e-3&amp;b=8"), "the name should be escaped");
}

#[test]
fn an_empty_run_beside_others_is_listed_as_having_no_steps() {
    let dir = TempDir::new().unwrap();
    let empty = write_run(dir.path(), "just-started", "");
    let svg = plot(dir.path(), &[write_run(dir.path(), "done", &metrics(30, 10)), empty]);
    assert!(svg.contains("just-started: no steps yet"), "the legend should say the run has no steps yet");
}

#[test]
fn long_runs_are_thinned_to_the_plot_width_keeping_the_spikes() {
    let dir = TempDir::new().unwrap();
    let spiky = |step| if step == 12_345 { 100.0 } else { 1.0 + (step % 3) as f64 };
    let a = write_run(dir.path(), "a", &metrics(20_000, 1000));
    let b = write_run(dir.path(), "b", &metrics_with(20_000, 1000, |step| 2.0 + 1.0 / (step + 1) as f64, spiky));
    let svg = plot(dir.path(), &[a, b]);
    let most = polylines(&svg).iter().map(|&(_, n)| n).max().unwrap();
    assert!(most <= 2 * 1200, "a line should keep at most 2 points per pixel column, has {most}");
    assert!(svg.len() < 400_000, "two 20000-step runs should stay small, got {} bytes", svg.len());
    // The axis fits the drawn points, so it goes log (1 .. 100) only if the one-step spike was kept.
    assert!(svg.contains("gradient norm (log scale)"), "the spike to 100 should survive thinning");
}

#[test]
fn bad_input_fails_with_one_line_naming_the_file() {
    let dir = TempDir::new().unwrap();
    let out = dir.path().join("plot.svg");
    let cases: [(&str, &str, &[&str]); 6] = [
        (
            "not-json",
            "{\"step\":0,\"val_loss\":10.0}\n{\"step\":0,\"val_loss\":9.0}\nstep 1 loss 2.5\n",
            &["line 3", "a JSON object", "step 1 loss 2.5"],
        ),
        ("not-object", "[1, 2]\n", &["line 1", "a JSON object"]),
        ("bad-number", "{\"step\":0,\"train_loss\":\"high\"}\n", &["line 1: train_loss", "a number", "high"]),
        ("bad-step", "{\"step\":-1,\"val_loss\":1.0}\n", &["line 1: step", "non-negative integer", "-1"]),
        ("no-step", "{\"val_loss\":1.0}\n", &["line 1: step", "found nothing"]),
        ("empty", "{\"kind\":\"resume\"}\n", &["a step or an evaluation", "none yet"]),
    ];
    for (name, text, expected) in cases {
        let run = write_run(dir.path(), name, text);
        let message = plot_error(std::slice::from_ref(&run), &out);
        assert!(message.contains(&run.join("metrics.jsonl").display().to_string()), "{name}: {message}");
        for part in expected {
            assert!(message.contains(part), "{name}: {message:?} should contain {part:?}");
        }
        assert!(!message.contains('\n'), "{name}: one line: {message:?}");
    }
    assert!(!out.exists(), "nothing should be written for bad input");

    let missing = dir.path().join("no-such-run");
    let message = plot_error(std::slice::from_ref(&missing), &out);
    assert!(message.contains("no-such-run") && message.contains("No such file"), "{message}");

    let good = write_run(dir.path(), "good", &metrics(30, 10));
    let nowhere = dir.path().join("no-such-dir").join("plot.svg");
    let message = plot_error(std::slice::from_ref(&good), &nowhere);
    assert!(message.contains(&nowhere.display().to_string()) && message.contains("does not exist"), "{message}");
    let message = plot_error(&[good], dir.path());
    assert!(message.contains("is a directory"), "{message}");

    let message = plot_metrics(&[], &out).unwrap_err().to_string();
    assert!(message.contains("no run"), "{message}");
}

#[test]
fn the_svg_is_replaced_atomically() {
    let dir = TempDir::new().unwrap();
    let out = dir.path().join("plot.svg");
    std::fs::write(&out, "old").unwrap();
    let run = write_run(dir.path(), "run", &metrics(30, 10));
    plot_runs(&[run], &out).unwrap();
    assert!(std::fs::read_to_string(&out).unwrap().starts_with("<svg"), "the old file should be replaced");
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "only the run and plot.svg, no temporary file left: {names:?}");
}

/// Runs `llmrs plot ARGS` in `dir`; returns (exit code, stdout, stderr).
fn llmrs_plot(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_llmrs"))
        .arg("plot")
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("the llmrs binary starts");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn the_command_writes_plot_svg_by_default_and_fails_in_one_line() {
    let dir = TempDir::new().unwrap();
    write_run(dir.path(), "a", &metrics(30, 10));
    write_run(dir.path(), "b", &metrics(45, 10));
    let (code, stdout, stderr) = llmrs_plot(dir.path(), &["a", "b/metrics.jsonl"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.trim(), "wrote plot.svg: 2 runs, up to step 45");
    assert_well_formed(&std::fs::read_to_string(dir.path().join("plot.svg")).unwrap());

    let (code, _, stderr) = llmrs_plot(dir.path(), &["a", "-o", "a/loss.svg"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(dir.path().join("a/loss.svg").exists(), "-o names the output");

    let (code, _, stderr) = llmrs_plot(dir.path(), &["a", "missing"]);
    assert_eq!(code, Some(1));
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("error: cannot read run metrics missing"), "{stderr}");
}
