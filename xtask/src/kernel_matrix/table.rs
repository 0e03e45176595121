//! The matrix as one table: a row per kernel, a column per check (the workload strategies
//! summed up in one column), and numbered notes under it with each failure's line, so that
//! the cells stay short.

use std::collections::BTreeSet;

use comfy_table::{ContentArrangement, Table, presets};

use super::{
    KernelRun,
    checks::SINGLE,
    verdict::{CheckResult, Status},
};

/// The table and its notes, ready to print.
pub fn render(runs: &[KernelRun]) -> String {
    render_as(runs, presets::UTF8_FULL_CONDENSED, "\n")
}

/// The same table as Markdown (README's support table), notes as a list.
pub fn markdown(runs: &[KernelRun]) -> String {
    render_as(runs, presets::ASCII_MARKDOWN, "\n- ")
}

fn render_as(runs: &[KernelRun], preset: &str, note_prefix: &str) -> String {
    let mut notes: Vec<String> = Vec::new();
    let mut note = |text: String| {
        notes.push(text);
        notes.len()
    };

    let mut table = Table::new();
    let mut header = vec!["kernel", "release", "boot", "total"];
    header.extend(SINGLE);
    header.extend(["workloads", "not exact (zcprof says)"]);
    table
        .load_preset(preset)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header);

    for run in runs {
        let mut kernel = run.kernel.clone();
        if let Some(e) = &run.error {
            kernel = format!("{kernel} [{}]", note(format!("{}: {e}", run.kernel)));
        }
        let mut row = vec![
            kernel,
            run.release.clone().unwrap_or_else(|| "—".into()),
            match (run.vm, run.boot_s) {
                (false, _) => "(host)".into(),
                (true, Some(b)) => format!("{b:.1}s"),
                (true, None) => "—".into(),
            },
            run.total_s.map_or("—".into(), |t| format!("{t:.0}s")),
        ];
        for check in SINGLE {
            row.push(match run.results.iter().find(|r| r.check == check) {
                Some(r) => cell(&run.kernel, std::slice::from_ref(r), &mut note),
                None => "—".into(),
            });
        }
        let workloads: Vec<CheckResult> = run
            .results
            .iter()
            .filter(|r| r.check.starts_with("workload:"))
            .cloned()
            .collect();
        row.push(if workloads.is_empty() {
            "—".into()
        } else {
            cell(&run.kernel, &workloads, &mut note)
        });
        let not_exact: BTreeSet<String> = run
            .results
            .iter()
            .flat_map(|r| &r.declared)
            .filter(|c| !c.exact())
            .map(|c| format!("{} ({})", c.name, c.state))
            .collect();
        row.push(if not_exact.is_empty() {
            "—".into()
        } else {
            not_exact.into_iter().collect::<Vec<_>>().join(", ")
        });
        table.add_row(row);
    }

    let mut text = table.to_string();
    if !notes.is_empty() {
        text.push('\n');
        for (i, n) in notes.iter().enumerate() {
            text.push_str(&format!("{note_prefix}[{}] {n}", i + 1));
        }
    }
    text
}

/// One cell for `results` (one check, or every workload strategy): the status, or for a
/// group the count of each status; a note per result that is not a pass or a skip.
fn cell(kernel: &str, results: &[CheckResult], note: &mut impl FnMut(String) -> usize) -> String {
    let single = results.len() == 1;
    let mut parts = Vec::new();
    for status in [
        Status::Pass,
        Status::Degraded,
        Status::Unsupported,
        Status::Fail,
        Status::Skipped,
    ] {
        let these: Vec<&CheckResult> = results.iter().filter(|r| r.status == status).collect();
        if these.is_empty() {
            continue;
        }
        let mut refs = Vec::new();
        let mut caps = BTreeSet::new();
        for r in &these {
            match status {
                Status::Pass | Status::Skipped => {}
                Status::Degraded => {
                    caps.extend(r.capabilities.iter().cloned());
                    refs.push(note(format!(
                        "{kernel} {}: degraded: {}",
                        r.check, r.detail
                    )));
                }
                Status::Unsupported | Status::Fail => {
                    let word = if status == Status::Fail {
                        "fail"
                    } else {
                        "unsupported by kernel"
                    };
                    refs.push(note(format!("{kernel} {}: {word}: {}", r.check, r.detail)));
                }
            }
        }
        let word = match status {
            Status::Pass => "pass",
            Status::Degraded => "degraded",
            Status::Unsupported => "unsupported",
            Status::Fail => "FAIL",
            Status::Skipped => "skipped",
        };
        let mut part = if single {
            word.to_owned()
        } else {
            format!("{} {word}", these.len())
        };
        if !caps.is_empty() {
            part.push_str(&format!(
                " ({})",
                caps.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        if !refs.is_empty() {
            let refs: Vec<String> = refs.iter().map(usize::to_string).collect();
            part.push_str(&format!(" [{}]", refs.join(",")));
        }
        parts.push(part);
    }
    parts.join(", ")
}
