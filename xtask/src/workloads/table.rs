//! The one table: a row per strategy, the copy model's classic counts (`docs/model.md`) beside
//! the workload's tally beside zcprof's measurements, and a verdict.

use comfy_table::{CellAlignment, ContentArrangement, Table, presets};

use super::check::MIB;
use super::model::{
    self, CPU_IN_KERNEL, CPU_KERNEL_TO_USER, CPU_USER_TO_KERNEL, DMA_DIRECT, MMAP_FAULT_IN,
    ZERO_COPY,
};
use super::{Outcome, Run};

/// Longest verdict shown in the table (the full text is in the list below it).
const VERDICT_WIDTH: usize = 48;

const HEADER: [&str; 21] = [
    "strategy",
    "classic\ncopies\n/chunk",
    "classic\nmode sw.\n/chunk",
    "tally\ndata\nsyscalls",
    "tally\nMiB",
    "tally\nuser copy\nMiB",
    "zcprof\nuser→kern\nMiB",
    "zcprof\nkern→user\nMiB",
    "zcprof\nin-kernel\nMiB",
    "zcprof\nzero-copy\nMiB",
    "zcprof\nDMA direct\nMiB",
    "zcprof\nfault-in\nMiB",
    "measured\ncopies\n/byte",
    "measured\nmode sw.\n/chunk",
    "zcprof\nsyscalls",
    "zcprof\nctx sw.\nvol/invol",
    "zcprof\nfaults\nmin/maj",
    "receiver\nkern→user\nMiB",
    "MiB/s",
    "CPU s",
    "verdict",
];

/// `bytes` in MiB: an integer when exact, else two decimals (so that a few stray bytes show).
pub fn mib(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) {
        (bytes >> 20).to_string()
    } else {
        format!("{:.2}", bytes as f64 / MIB)
    }
}

/// A ratio: an integer when it is one, else three decimals.
fn ratio(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.3}")
    }
}

pub fn render(runs: &[Run]) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(HEADER.to_vec());
    for run in runs {
        let model = model::model(run.strategy);
        let classic = model.and_then(|m| m.classic);
        let mut row = vec![
            run.strategy.to_owned(),
            classic.map_or("—".into(), |s| s.copies.to_owned()),
            classic.map_or("—".into(), |s| s.mode_switches.to_owned()),
        ];
        match &run.outcome {
            Outcome::Measured(m) => {
                let d = &m.evaluation.derived;
                let col = |c: &str| mib(d.columns.get(c).copied().unwrap_or(0));
                let user_copies = if d.user_copied > 0 {
                    format!(
                        " ({} user)",
                        ratio(d.user_copied as f64 / d.bytes.max(1) as f64)
                    )
                } else {
                    String::new()
                };
                let verdict = match m.evaluation.mismatches().next() {
                    None => "ok".to_owned(),
                    Some(c) => {
                        let n = m.evaluation.mismatches().count();
                        let text = if n > 1 {
                            format!("{} (+{} more)", c.what, n - 1)
                        } else {
                            c.what.clone()
                        };
                        shorten(&text, VERDICT_WIDTH)
                    }
                };
                row.extend([
                    d.data_syscalls.to_string(),
                    mib(d.bytes),
                    mib(d.user_copied),
                    col(CPU_USER_TO_KERNEL),
                    col(CPU_KERNEL_TO_USER),
                    col(CPU_IN_KERNEL),
                    col(ZERO_COPY),
                    col(DMA_DIRECT),
                    col(MMAP_FAULT_IN),
                    format!("{}{user_copies}", ratio(d.copies_per_byte)),
                    format!("{:.3}", d.mode_switches_per_chunk),
                    d.sender_syscalls.to_string(),
                    format!("{}/{}", d.context_switches.0, d.context_switches.1),
                    format!("{}/{}", d.page_faults.0, d.page_faults.1),
                    d.receiver_kernel_to_user.map_or("—".into(), mib),
                    format!("{:.0}", d.throughput_mib_s),
                    format!("{:.3}", d.cpu_s),
                    verdict,
                ]);
            }
            Outcome::Failed(e) => {
                row.extend(std::iter::repeat_n("—".to_owned(), HEADER.len() - 4));
                row.push(shorten(
                    &format!("run failed: {}", e.lines().next().unwrap_or("")),
                    VERDICT_WIDTH,
                ));
            }
        }
        table.add_row(row);
    }
    for i in 1..HEADER.len() - 1 {
        if let Some(column) = table.column_mut(i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table.to_string()
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mib_shows_stray_bytes() {
        assert_eq!(mib(256 << 20), "256");
        assert_eq!(mib(0), "0");
        assert_eq!(mib((256 << 20) + 11), "256.00");
        assert_eq!(mib(3 << 19), "1.50");
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(2.0), "2");
        assert_eq!(ratio(0.0), "0");
        assert_eq!(ratio(2.0005), "2.001");
    }

    #[test]
    fn shorten_long_text() {
        assert_eq!(shorten("abc", 5), "abc");
        assert_eq!(shorten("abcdef", 4), "abc…");
    }
}
