//! The pieces every case's results are shown with: tables (terminal and Markdown), targets
//! and their verdicts, and how numbers are written.

use std::fmt::Write as _;

use comfy_table::{CellAlignment, ContentArrangement, Table, presets};
use serde::Serialize;

/// One table, rendered for the terminal or as Markdown.
pub struct Tab {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Lines under the table.
    pub notes: Vec<String>,
}

impl Tab {
    pub fn terminal(&self) -> String {
        let mut table = Table::new();
        table
            .load_preset(presets::UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header(self.header.clone());
        for row in &self.rows {
            table.add_row(row.clone());
        }
        for i in 1..self.header.len() {
            if let Some(col) = table.column_mut(i) {
                col.set_cell_alignment(CellAlignment::Right);
            }
        }
        let mut out = format!("{}\n{table}\n", self.title);
        for n in &self.notes {
            let _ = writeln!(out, "  {n}");
        }
        out
    }

    pub fn markdown(&self) -> String {
        let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
        let mut out = format!("### {}\n\n", self.title);
        let _ = writeln!(
            out,
            "| {} |",
            self.header
                .iter()
                .map(|h| cell(h))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        let _ = writeln!(
            out,
            "|{}",
            (0..self.header.len())
                .map(|i| if i == 0 { "---|" } else { "---:|" })
                .collect::<String>()
        );
        for row in &self.rows {
            let _ = writeln!(
                out,
                "| {} |",
                row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")
            );
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        out
    }
}

pub fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.decimals$}"))
}

pub fn samples(v: &[f64], decimals: usize) -> String {
    v.iter()
        .map(|x| format!("{x:.decimals$}"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn status(error: &Option<String>, skipped: &Option<String>) -> Option<String> {
    if skipped.is_some() {
        Some("skipped".into())
    } else {
        error.as_ref().map(|_| "NOT MEASURED".into())
    }
}

/// Thousands separated by commas, for counts of processes and forks.
pub fn count(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 && digits != "0" {
        out.insert(0, '-');
    }
    out
}

pub fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or_default();
    if s.lines().nth(1).is_some() {
        format!("{line} …")
    } else {
        line.to_owned()
    }
}

/// Units of targets that count things (printed without decimals).
const COUNT_UNITS: [&str; 3] = ["events", "writes", "entries"];

/// One target of the issue, evaluated.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub what: String,
    pub measured: Option<f64>,
    pub limit: f64,
    pub unit: &'static str,
    /// None: could not be evaluated (see `why`).
    pub met: Option<bool>,
    pub why: Option<String>,
}

impl Target {
    pub fn new(what: String, measured: Option<f64>, limit: f64, unit: &'static str) -> Target {
        Target {
            what,
            measured,
            limit,
            unit,
            met: measured.map(|m| m <= limit),
            why: None,
        }
    }

    pub fn because(mut self, why: Option<String>) -> Target {
        if self.met.is_none() {
            self.why = why;
        }
        self
    }

    pub fn verdict(&self) -> &'static str {
        match self.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not evaluated",
        }
    }

    pub(super) fn measured_text(&self) -> String {
        match self.measured {
            Some(m) if self.unit == "×" => format!("{m:.2}×"),
            Some(m) if COUNT_UNITS.contains(&self.unit) => format!("{} {}", count(m), self.unit),
            Some(m) => format!("{m:.1} {}", self.unit),
            None => "n/a".into(),
        }
    }

    pub(super) fn limit_text(&self) -> String {
        if self.unit == "×" {
            format!("≤ {}×", self.limit)
        } else if self.limit.fract() != 0.0 {
            format!("≤ {:.1} {}", self.limit, self.unit)
        } else {
            format!("≤ {} {}", self.limit, self.unit)
        }
    }
}
