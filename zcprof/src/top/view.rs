//! Drawing `zcprof top` with ratatui: a title line, a totals line, the table of rows (or the
//! drill-down of one), a footer with the keys, and the key help over it on `?`.
//!
//! Everything fits 80x24: below [`WIDE`] columns the byte rates lose their space and `iB`
//! (`1.5M` for `1.5 MiB`) and the headers are abbreviated; names are cut to what is left.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Clear, Paragraph, Row as TRow, Table, TableState},
};

use super::{
    Rows,
    model::{self, Group, Rates, SortKey},
    state::App,
};
use crate::report;

/// From this many columns on, full units and headers.
pub const WIDE: u16 = 110;

/// A byte rate: `report::bytes`, made compact on a narrow screen.
fn bytes(v: f64, wide: bool) -> String {
    let s = report::bytes(v.round() as u64);
    if wide {
        s
    } else {
        s.replace(" B", "B").replace("iB", "").replace(' ', "")
    }
}

/// A count rate in at most six characters (`812`, `12.5k`, `3.1M`).
pub fn count(v: f64) -> String {
    if v < 9_999.5 {
        format!("{v:.0}")
    } else if v < 999_950.0 {
        format!("{:.1}k", v / 1e3)
    } else if v < 999_950_000.0 {
        format!("{:.1}M", v / 1e6)
    } else {
        format!("{:.1}G", v / 1e9)
    }
}

/// A count rate in at most four characters (`812`, `13k`, `3M`), for the switches pair.
fn short(v: f64) -> String {
    if v < 999.5 {
        format!("{v:.0}")
    } else if v < 999_500.0 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{:.0}M", v / 1e6)
    }
}

fn share(r: &Rates) -> String {
    r.zero_copy_share()
        .map_or_else(|| "-".into(), |s| format!("{:.0}%", s * 100.0))
}

/// `s` cut to `width` characters; a path keeps its end (the unit or container is there).
fn fit(s: &str, width: usize, keep_end: bool) -> String {
    let n = s.chars().count();
    if n <= width {
        return s.to_string();
    }
    if width == 0 {
        return String::new();
    }
    if keep_end {
        let tail: String = s.chars().skip(n - (width - 1)).collect();
        format!("…{tail}")
    } else {
        s.chars().take(width).collect()
    }
}

/// A numeric column: its headers (narrow, wide), widths (narrow, wide), the key it sorts by.
struct Col {
    narrow: &'static str,
    wide: &'static str,
    widths: (u16, u16),
    sort: SortKey,
}

/// The rate columns, in the order of [`SortKey::ALL`] after the name.
const RATE_COLS: [Col; 7] = [
    Col {
        narrow: "SYSC/s",
        wide: "SYSCALLS/s",
        widths: (6, 10),
        sort: SortKey::Syscalls,
    },
    Col {
        narrow: "CPU-CP/s",
        wide: "CPU-COPIED/s",
        widths: (8, 12),
        sort: SortKey::CpuCopied,
    },
    Col {
        narrow: "ZERO-CP/s",
        wide: "ZERO-COPY/s",
        widths: (9, 12),
        sort: SortKey::ZeroCopy,
    },
    Col {
        narrow: "DMA+FI/s",
        wide: "DMA+FAULT-IN/s",
        widths: (8, 14),
        sort: SortKey::DmaFaultIn,
    },
    Col {
        narrow: "ZC%",
        wide: "ZC SHARE",
        widths: (4, 8),
        sort: SortKey::ZeroCopyShare,
    },
    Col {
        narrow: "CSW v/i",
        wide: "CTX SW/s VOL/INV",
        widths: (9, 16),
        sort: SortKey::ContextSwitches,
    },
    Col {
        narrow: "FLT/s",
        wide: "FAULTS/s",
        widths: (6, 9),
        sort: SortKey::Faults,
    },
];

fn rate_cells(r: &Rates, wide: bool) -> [String; 7] {
    [
        count(r.syscalls),
        bytes(r.cpu_copied, wide),
        bytes(r.zero_copy, wide),
        bytes(r.dma_fault_in, wide),
        share(r),
        format!("{}/{}", short(r.ctx_voluntary), short(r.ctx_involuntary)),
        count(r.faults),
    ]
}

fn right(s: String) -> Cell<'static> {
    Cell::from(Line::from(s).right_aligned())
}

fn header_style() -> Style {
    Style::default().add_modifier(Modifier::REVERSED)
}

/// Leading columns (pid, name...) then the rate columns: the table's widths, the name column
/// taking what is left.
fn widths(area: u16, lead: &[u16], wide: bool, rates: usize) -> (Vec<Constraint>, usize) {
    let fixed: u16 = lead.iter().sum::<u16>()
        + RATE_COLS[..rates]
            .iter()
            .map(|c| if wide { c.widths.1 } else { c.widths.0 })
            .sum::<u16>();
    // One space between columns.
    let gaps = (lead.len() + rates) as u16;
    let name = area.saturating_sub(fixed + gaps).max(4);
    let mut out: Vec<Constraint> = lead.iter().map(|w| Constraint::Length(*w)).collect();
    out.push(Constraint::Length(name));
    out.extend(
        RATE_COLS[..rates]
            .iter()
            .map(|c| Constraint::Length(if wide { c.widths.1 } else { c.widths.0 })),
    );
    (out, name as usize)
}

fn totals_line(r: &Rates, wide: bool, tail: String) -> Line<'static> {
    // Short names on a narrow screen, so that the row count at the end still fits.
    let (dma, syscalls) = if wide {
        ("DMA+fault-in", "syscalls")
    } else {
        ("DMA+FI", "sysc")
    };
    Line::from(format!(
        "CPU-copied {}/s  zero-copy {}/s  {dma} {}/s  {} {syscalls}/s{tail}",
        bytes(r.cpu_copied, wide),
        bytes(r.zero_copy, wide),
        bytes(r.dma_fault_in, wide),
        count(r.syscalls),
    ))
}

/// Draws the whole screen.
pub fn draw(f: &mut Frame, app: &App, table: &mut TableState) {
    let [title, totals, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let wide = f.area().width >= WIDE;
    let state = if app.paused {
        "  PAUSED"
    } else if app.collections == 0 {
        "  collecting…"
    } else {
        ""
    };
    match app.detail.as_deref() {
        None => {
            let rows = app.rows();
            let (what, one) = match app.rows_by {
                Rows::Process => ("processes", "process"),
                Rows::Comm => ("commands", "command"),
                Rows::Cgroup => ("cgroups", "cgroup"),
                Rows::Container => ("containers", "container"),
            };
            f.render_widget(
                Paragraph::new(format!(
                    "zcprof top · {} · {what} by {} · every {:?}{state}",
                    app.scope,
                    app.sort.title(app.rows_by),
                    app.interval,
                ))
                .style(Style::default().add_modifier(Modifier::BOLD)),
                title,
            );
            let lost = match app.shown.lost {
                0 => String::new(),
                n => format!("  {n} events lost"),
            };
            let n = rows.len();
            let tail = format!("  {n} {}{lost}", if n == 1 { one } else { what });
            f.render_widget(
                Paragraph::new(totals_line(&model::total(&rows), wide, tail)),
                totals,
            );
            list(f, app, &rows, body, wide, table);
        }
        Some(key) => {
            let group = app.shown.group(key);
            let name = match (app.rows_by, group) {
                (Rows::Process, Some(g)) => format!("pid {key} ({})", g.name),
                (Rows::Process, None) => format!("pid {key}"),
                (Rows::Comm, _) => format!("command {key}"),
                (Rows::Cgroup, _) => format!("cgroup {key}"),
                (Rows::Container, Some(g)) => format!("container {}", g.name),
                (Rows::Container, None) => format!("container {key}"),
            };
            let threads = group.map_or(0, |g| g.threads.len());
            f.render_widget(
                Paragraph::new(format!(
                    "zcprof top · {name} · {threads} thread{}{state}",
                    if threads == 1 { "" } else { "s" }
                ))
                .style(Style::default().add_modifier(Modifier::BOLD)),
                title,
            );
            let rates = group.map(|g| Rates::of(&g.activity, app.shown.secs));
            f.render_widget(
                Paragraph::new(totals_line(&rates.unwrap_or_default(), wide, String::new())),
                totals,
            );
            match group {
                Some(g) => detail(f, app, g, body, wide),
                None => f.render_widget(
                    Paragraph::new(format!(
                        "\n  {name}: no activity in the last interval (it may have exited)"
                    )),
                    body,
                ),
            }
        }
    }
    f.render_widget(Paragraph::new(footer_line(app)), footer);
    if app.help {
        help(f);
    }
}

fn footer_line(app: &App) -> Line<'static> {
    if app.editing {
        return Line::from(vec![
            Span::styled("filter: ", Style::default().add_modifier(Modifier::BOLD)),
            Span::raw(format!("{}_", app.filter)),
            Span::raw("   Enter keep · Esc clear"),
        ]);
    }
    if let Some(e) = &app.error {
        return Line::from(Span::styled(
            format!("error: {e}"),
            Style::default().add_modifier(Modifier::BOLD),
        ));
    }
    let keys = if app.detail.is_some() {
        "Esc back · ↑↓ scroll · p pause · ? keys · q quit"
    } else {
        "q quit · ↑↓ select · Enter details · s/S sort · / filter · p pause · ? keys"
    };
    if app.filter.is_empty() {
        Line::from(keys)
    } else {
        Line::from(vec![
            Span::styled(
                format!("filter: {}", app.filter),
                Style::default().add_modifier(Modifier::BOLD),
            ),
            Span::raw(format!(" (Esc clears) · {keys}")),
        ])
    }
}

fn list(
    f: &mut Frame,
    app: &App,
    rows: &[model::Row],
    area: Rect,
    wide: bool,
    st: &mut TableState,
) {
    let process = app.rows_by == Rows::Process;
    let lead: &[u16] = if process { &[7] } else { &[] };
    let (constraints, name_width) = widths(area.width, lead, wide, RATE_COLS.len());
    let sorted = |k: SortKey| {
        if app.sort == k {
            header_style().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
        } else {
            header_style()
        }
    };
    let name_title = match app.rows_by {
        Rows::Process => "COMM",
        Rows::Comm => "COMMAND",
        Rows::Cgroup => "CGROUP",
        Rows::Container => "CONTAINER",
    };
    let mut header: Vec<Cell> = Vec::new();
    if process {
        header.push(right("PID".into()).style(sorted(SortKey::Name)));
        header.push(Cell::from(name_title));
    } else {
        header.push(Cell::from(name_title).style(sorted(SortKey::Name)));
    }
    for c in &RATE_COLS {
        let title = if wide { c.wide } else { c.narrow };
        header.push(right(title.into()).style(sorted(c.sort)));
    }
    let lines: Vec<TRow> = rows
        .iter()
        .map(|r| {
            let mut cells: Vec<Cell> = Vec::new();
            if process {
                cells.push(right(r.pid.map(|p| p.to_string()).unwrap_or_default()));
            }
            cells.push(Cell::from(fit(
                &r.name,
                name_width,
                app.rows_by == Rows::Cgroup,
            )));
            cells.extend(rate_cells(&r.rates, wide).into_iter().map(right));
            TRow::new(cells)
        })
        .collect();
    st.select(app.selection(rows));
    let empty = lines.is_empty();
    let table = Table::new(lines, constraints)
        .header(TRow::new(header).style(header_style()))
        .column_spacing(1)
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    f.render_stateful_widget(table, area, st);
    if empty && area.height > 2 {
        let msg = if app.collections == 0 {
            "  waiting for the first interval…"
        } else if !app.filter.is_empty() {
            "  no row matches the filter"
        } else {
            "  no activity counted yet"
        };
        let below = Rect {
            y: area.y + 1,
            height: 1,
            ..area
        };
        f.render_widget(Paragraph::new(msg), below);
    }
}

fn detail(f: &mut Frame, app: &App, g: &Group, area: Rect, wide: bool) {
    let ledger = model::ledger_rows(&g.activity, app.shown.secs);
    let threads = model::thread_rows(g, app.shown.secs);
    // The ledger first, up to half the screen; the threads below.
    let ledger_height = (ledger.len().max(1) as u16 + 1).min(area.height / 2).max(2);
    let [top, _, bottom] = Layout::vertical([
        Constraint::Length(ledger_height),
        Constraint::Length(1),
        Constraint::Min(0),
    ])
    .areas(area);
    let byte_w = if wide { 12 } else { 9 };
    let lines: Vec<TRow> = ledger
        .iter()
        .map(|l| {
            TRow::new(vec![
                Cell::from(l.syscall.clone()),
                Cell::from(l.column),
                right(count(l.calls)),
                right(bytes(l.bytes, wide)),
            ])
        })
        .collect();
    let empty = lines.is_empty();
    let table = Table::new(
        lines,
        [
            Constraint::Length(22),
            Constraint::Length(18),
            Constraint::Length(8),
            Constraint::Length(byte_w),
        ],
    )
    .header(
        TRow::new(vec![
            Cell::from("SYSCALL"),
            Cell::from("LEDGER COLUMN"),
            right("CALLS/s".into()),
            right("BYTES/s".into()),
        ])
        .style(header_style()),
    )
    .column_spacing(1);
    f.render_widget(table, top);
    if empty && top.height > 1 {
        let below = Rect {
            y: top.y + 1,
            height: 1,
            ..top
        };
        f.render_widget(
            Paragraph::new("  no data-moving call in the interval"),
            below,
        );
    }

    let process = app.rows_by == Rows::Process;
    let lead: &[u16] = if process { &[7] } else { &[7, 7] };
    let (constraints, name_width) = widths(bottom.width, lead, wide, RATE_COLS.len());
    let mut header = vec![right("TID".into())];
    if !process {
        header.push(right("PID".into()));
    }
    header.push(Cell::from("THREAD"));
    header.extend(
        RATE_COLS
            .iter()
            .map(|c| right((if wide { c.wide } else { c.narrow }).into())),
    );
    let lines: Vec<TRow> = threads
        .iter()
        .skip(app.detail_scroll.min(threads.len().saturating_sub(1)))
        .map(|t| {
            let mut cells = vec![right(t.tid.to_string())];
            if !process {
                cells.push(right(t.pid.to_string()));
            }
            cells.push(Cell::from(fit(&t.comm, name_width, false)));
            cells.extend(rate_cells(&t.rates, wide).into_iter().map(right));
            TRow::new(cells)
        })
        .collect();
    let table = Table::new(lines, constraints)
        .header(TRow::new(header).style(header_style()))
        .column_spacing(1);
    f.render_widget(table, bottom);
}

/// The keys and what the columns mean, over the table.
fn help(f: &mut Frame) {
    const TEXT: [&str; 15] = [
        "s →      sort by the next column     S ←  the previous one",
        "↑ ↓ PgUp PgDn Home End               select a row",
        "Enter    the selected row's ledger by syscall, and its threads",
        "Esc ⌫    back to the list            / filter by name or pid",
        "p space  pause the screen            q Ctrl-C  quit",
        "",
        "Per second, over the last interval:",
        "SYSC      syscalls (each is two mode switches)",
        "CPU-CP    bytes the CPU copied (user↔kernel, in-kernel)",
        "ZERO-CP   bytes moved without a copy (sendfile, splice...)",
        "DMA+FI    O_DIRECT bytes + file pages faulted into mmaps",
        "ZC%       zero-copy / (zero-copy + CPU-copied)",
        "CSW v/i   voluntary / involuntary context switches",
        "FLT       page faults (minor + major)",
        "                                 any key closes this help",
    ];
    let area = f.area();
    let width =
        (TEXT.iter().map(|l| l.chars().count()).max().unwrap_or(0) as u16 + 4).min(area.width);
    let height = (TEXT.len() as u16 + 2).min(area.height);
    let rect = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    f.render_widget(Clear, rect);
    let lines: Vec<Line> = TEXT.iter().map(|l| Line::from(format!(" {l}"))).collect();
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" keys ")),
        rect,
    );
}

#[cfg(test)]
mod tests;
