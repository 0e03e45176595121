//! `--chart FILE.svg`: three bar panels, one bar per strategy: CPU-copied bytes per MiB sent
//! (kernel copies as zcprof measured them, user-space copies as the workload tallied them,
//! stacked), mode switches per MiB sent, throughput.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One strategy's bars.
pub struct Bar {
    pub strategy: String,
    pub kernel_copied_per_mib: f64,
    pub user_copied_per_mib: f64,
    pub mode_switches_per_mib: f64,
    pub throughput_mib_s: f64,
}

const MIB: f64 = (1u64 << 20) as f64;
const WIDTH: u32 = 1200;
const PANEL_HEIGHT: u32 = 360;
const TITLE_HEIGHT: u32 = 50;
const KERNEL: RGBColor = RGBColor(0x3b, 0x6e, 0xa8);
const USER: RGBColor = RGBColor(0xe0, 0x8a, 0x2c);
const SWITCHES: RGBColor = RGBColor(0x6a, 0x9f, 0x4b);
const THROUGHPUT: RGBColor = RGBColor(0x8e, 0x5b, 0xa6);

/// Writes the chart to `path` (SVG).
pub fn draw(path: &Path, title: &str, bars: &[Bar]) -> Result<()> {
    let height = TITLE_HEIGHT + 3 * PANEL_HEIGHT;
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let (top, panels) = root.split_vertically(TITLE_HEIGHT);
    top.titled(title, ("sans-serif", 24)).map_err(plot_error)?;
    let panels = panels.split_evenly((3, 1));

    let names: Vec<&str> = bars.iter().map(|b| b.strategy.as_str()).collect();
    panel(
        &panels[0],
        "CPU-copied bytes per MiB sent (blue: kernel, measured by zcprof; orange: user space, tallied)",
        "MiB copied per MiB sent",
        &names,
        &bars
            .iter()
            .map(|b| {
                vec![
                    (b.kernel_copied_per_mib / MIB, KERNEL),
                    (b.user_copied_per_mib / MIB, USER),
                ]
            })
            .collect::<Vec<_>>(),
        |v| format!("{} MiB", number(v)),
        |v| format!("{v:.1}"),
    )?;
    panel(
        &panels[1],
        "Mode switches per MiB sent (2 per data-moving system call)",
        "mode switches per MiB sent",
        &names,
        &bars
            .iter()
            .map(|b| vec![(b.mode_switches_per_mib, SWITCHES)])
            .collect::<Vec<_>>(),
        number,
        |v| format!("{v:.0}"),
    )?;
    panel(
        &panels[2],
        "Throughput (MiB/s, loopback, file in the page cache)",
        "MiB/s",
        &names,
        &bars
            .iter()
            .map(|b| vec![(b.throughput_mib_s, THROUGHPUT)])
            .collect::<Vec<_>>(),
        |v| format!("{v:.0}"),
        |v| format!("{v:.0}"),
    )?;
    root.present().map_err(plot_error)?;
    Ok(())
}

/// One panel: a bar per strategy, each bar a stack of (value, colour) parts, labelled with its
/// total (`label`); `tick` formats the y axis.
fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    caption: &str,
    y_desc: &str,
    names: &[&str],
    stacks: &[Vec<(f64, RGBColor)>],
    label: impl Fn(f64) -> String,
    tick: impl Fn(&f64) -> String,
) -> Result<()> {
    let n = names.len();
    let top = stacks
        .iter()
        .map(|s| s.iter().map(|(v, _)| v).sum::<f64>())
        .fold(0.0, f64::max);
    let y_max = if top > 0.0 { top * 1.15 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(90)
        // A segmented integer range has a segment per value, both ends included.
        .build_cartesian_2d((0..n.saturating_sub(1)).into_segmented(), 0f64..y_max)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_labels(n.max(1))
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i).map_or_else(String::new, |s| s.to_string()),
            _ => String::new(),
        })
        .y_desc(y_desc)
        .y_label_formatter(&tick)
        .draw()
        .map_err(plot_error)?;

    for (i, stack) in stacks.iter().enumerate() {
        let mut base = 0.0;
        for &(value, colour) in stack {
            if value <= 0.0 {
                continue;
            }
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), base),
                    (SegmentValue::Exact(i + 1), base + value),
                ],
                colour.filled(),
            );
            bar.set_margin(0, 0, 12, 12);
            chart
                .draw_series(std::iter::once(bar))
                .map_err(plot_error)?;
            base += value;
        }
        let style = TextStyle::from(("sans-serif", 13).into_font())
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        chart
            .draw_series(std::iter::once(Text::new(
                label(base),
                (SegmentValue::CenterOf(i), base),
                style,
            )))
            .map_err(plot_error)?;
    }
    Ok(())
}

/// An integer when `v` is one, else three decimals.
fn number(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

fn plot_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing the chart: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_three_panels() {
        let bars: Vec<Bar> = ["read-write", "heap-buffer", "sendfile"]
            .iter()
            .enumerate()
            .map(|(i, s)| Bar {
                strategy: s.to_string(),
                kernel_copied_per_mib: if i == 2 { 0.0 } else { 2.0 * MIB },
                user_copied_per_mib: if i == 1 { MIB } else { 0.0 },
                mode_switches_per_mib: if i == 2 { 0.008 } else { 64.0 },
                throughput_mib_s: 1000.0 * (i + 1) as f64,
            })
            .collect();
        let path = std::env::temp_dir().join(format!("xtask-chart-{}.svg", std::process::id()));
        draw(&path, "test", &bars).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        for s in [
            "read-write",
            "heap-buffer",
            "sendfile",
            "3 MiB",
            "0.008",
            "3000",
        ] {
            assert!(svg.contains(s), "{s} missing from the chart");
        }
    }
}
