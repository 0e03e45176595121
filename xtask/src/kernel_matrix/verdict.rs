//! What one check found, as the guest writes it and the host reads it, and how a mismatch
//! becomes a verdict: a difference that lies only in what a capability zcprof declared
//! degraded or unavailable feeds is "degraded (that capability)", not a failure.
//!
//! The capability list is zcprof's (`"capabilities": [{"name", "state", "why"}]` in its JSON
//! documents); a zcprof without it declares nothing, and every mismatch is then a failure.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The capability that classifies descriptors (and so feeds every column's split).
pub const FD_TYPES: &str = "fd_types";
pub const MMAP_FAULT_IN: &str = "mmap_fault_in";
pub const IO_URING: &str = "io_uring";

/// Longest error line kept in a result (the full text is in the check's data).
const LINE_MAX: usize = 240;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    /// Differs only where a capability zcprof declared not exact feeds.
    Degraded,
    /// The kernel cannot do what the check needs (the workload's own error says so).
    Unsupported,
    Fail,
    /// Not run (zcprof could not start in an earlier check, or the guest never got to it).
    Skipped,
}

impl Status {
    /// Whether the kernel's row is acceptable with this result.
    pub fn acceptable(self) -> bool {
        matches!(self, Status::Pass | Status::Degraded | Status::Unsupported)
    }
}

/// One capability as zcprof declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability {
    pub name: String,
    /// `exact`, `degraded` or `unavailable`.
    pub state: String,
    #[serde(default)]
    pub why: String,
}

impl Capability {
    pub fn exact(&self) -> bool {
        self.state == "exact"
    }
}

/// The capabilities in a zcprof JSON document (none if it has no such list).
pub fn capabilities(doc: &Value) -> Vec<Capability> {
    let mut caps: Vec<Capability> = doc
        .get("capabilities")
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    if let Some(n) = doc["lost"][KERNEL_SKIPPED].as_u64().filter(|&n| n > 0) {
        caps.push(Capability {
            name: KERNEL_SKIPPED.to_owned(),
            state: "degraded".to_owned(),
            why: format!("the kernel skipped zcprof's programs {n} times"),
        });
    }
    caps
}

/// One check's result: one file in the guest's result directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckResult {
    /// `dd`, `cp`, `sendfile`, `churn`, `serve`, `workload:<strategy>`.
    pub check: String,
    pub status: Status,
    /// For `degraded`: the capabilities the differences are confined to.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// One line: what passed, what differed, or zcprof's (or the workload's) error line.
    pub detail: String,
    /// Every difference found (`what: expected E, measured M`).
    #[serde(default)]
    pub mismatches: Vec<String>,
    /// What zcprof declared in this check's document.
    #[serde(default)]
    pub declared: Vec<Capability>,
    pub elapsed_s: f64,
    /// zcprof exited with its error and no document (for dd: before the command ran, i.e. it
    /// could not load or attach its programs; every further check would then fail the same
    /// way, slowly, and is skipped).
    #[serde(default)]
    pub not_started: bool,
    /// zcprof's document(s), stderr and anything else worth keeping.
    #[serde(default)]
    pub data: Value,
}

impl CheckResult {
    pub fn new(check: &str, status: Status, detail: impl Into<String>) -> Self {
        Self {
            check: check.to_owned(),
            status,
            capabilities: Vec::new(),
            detail: one_line(&detail.into()),
            mismatches: Vec::new(),
            declared: Vec::new(),
            elapsed_s: 0.0,
            not_started: false,
            data: Value::Null,
        }
    }
}

/// Stands in a mismatch's `feeds` for "the kernel itself lacks the feature" (the workload
/// says so in its own account): unsupported, not a zcprof failure.
pub const KERNEL: &str = "kernel";

/// One difference between what a check expected and what zcprof measured, with the
/// capabilities that feed the measured number (none: exact counting, no capability; or
/// [`KERNEL`]).
pub struct Mismatch {
    pub what: String,
    pub feeds: &'static [&'static str],
    /// zcprof measured less than expected: what events the kernel skipped would cause.
    pub short: bool,
}

impl Mismatch {
    pub fn new(what: impl Into<String>, feeds: &'static [&'static str]) -> Self {
        Self {
            what: what.into(),
            feeds,
            short: false,
        }
    }

    /// A count that came out below the expected one.
    pub fn short(what: impl Into<String>, feeds: &'static [&'static str]) -> Self {
        Self {
            short: true,
            ..Self::new(what, feeds)
        }
    }
}

/// Not a capability of zcprof's but a declaration of the kernel's: it skipped zcprof's
/// programs this many times (`lost.kernel_skipped`: a program preempted mid-run blocks it on
/// its CPU). A count that came out short then degrades instead of failing; one that came out
/// high, or any other difference, still fails.
pub const KERNEL_SKIPPED: &str = "kernel_skipped";

/// A check's result from its mismatches and zcprof's declared capabilities: pass if none;
/// fail if one lies outside what a non-exact capability feeds and the kernel does not lack
/// (naming the first such); else degraded (naming the capabilities) or, if only the kernel
/// lacks something, unsupported.
pub fn judge(
    check: &str,
    mismatches: Vec<Mismatch>,
    declared: Vec<Capability>,
    pass_detail: &str,
) -> CheckResult {
    let not_exact: BTreeSet<&str> = declared
        .iter()
        .filter(|c| !c.exact())
        .map(|c| c.name.as_str())
        .collect();
    let mut degraded_by = BTreeSet::new();
    let mut kernel_lacks = Vec::new();
    let mut unexplained = Vec::new();
    for m in &mismatches {
        let caps: Vec<&str> = m
            .feeds
            .iter()
            .copied()
            .filter(|c| not_exact.contains(c))
            .collect();
        if !caps.is_empty() {
            degraded_by.extend(caps);
        } else if m.short && not_exact.contains(KERNEL_SKIPPED) {
            degraded_by.insert(KERNEL_SKIPPED);
        } else if m.feeds.contains(&KERNEL) {
            kernel_lacks.push(m.what.as_str());
        } else {
            unexplained.push(m.what.as_str());
        }
    }
    let all = || {
        mismatches
            .iter()
            .map(|m| m.what.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mut result = if let Some(first) = unexplained.first() {
        let n = mismatches.len();
        let more = if n > 1 {
            format!(" (and {} more)", n - 1)
        } else {
            String::new()
        };
        CheckResult::new(check, Status::Fail, format!("{first}{more}"))
    } else if !degraded_by.is_empty() {
        let mut r = CheckResult::new(check, Status::Degraded, all());
        r.capabilities = degraded_by.into_iter().map(str::to_owned).collect();
        r
    } else if !kernel_lacks.is_empty() {
        CheckResult::new(check, Status::Unsupported, kernel_lacks.join("; "))
    } else {
        CheckResult::new(check, Status::Pass, pass_detail)
    };
    result.mismatches = mismatches.into_iter().map(|m| m.what).collect();
    result.declared = declared;
    result
}

/// zcprof's error line from its stderr: the first `zcprof: error:` line, else the first
/// non-empty line; trimmed, and cut at a readable length.
pub fn error_line(stderr: &str) -> String {
    let lines = || {
        stderr
            .lines()
            .map(|l| l.trim().trim_start_matches("| ").trim())
    };
    let line = lines()
        .find(|l| l.starts_with("zcprof: error:"))
        .or_else(|| lines().find(|l| !l.is_empty()))
        .unwrap_or("(no output on stderr)");
    one_line(line)
}

/// The first line of `text`, trimmed, at most [`LINE_MAX`] characters.
pub fn one_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    if line.chars().count() <= LINE_MAX {
        return line.to_owned();
    }
    let cut: String = line.chars().take(LINE_MAX).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(name: &str, state: &str) -> Capability {
        Capability {
            name: name.into(),
            state: state.into(),
            why: String::new(),
        }
    }

    #[test]
    fn verdicts() {
        let r = judge("x", vec![], vec![], "ok");
        assert_eq!(r.status, Status::Pass);

        let m = || vec![Mismatch::new("zero_copy bytes", &[FD_TYPES])];
        assert_eq!(judge("x", m(), vec![], "").status, Status::Fail);
        assert_eq!(
            judge("x", m(), vec![cap(FD_TYPES, "exact")], "").status,
            Status::Fail
        );
        let r = judge("x", m(), vec![cap(FD_TYPES, "unavailable")], "");
        assert_eq!(r.status, Status::Degraded);
        assert_eq!(r.capabilities, [FD_TYPES]);

        let mut both = m();
        both.push(Mismatch::new("write calls", &[]));
        let r = judge("x", both, vec![cap(FD_TYPES, "degraded")], "");
        assert_eq!(r.status, Status::Fail);
        assert_eq!(r.detail, "write calls (and 1 more)");

        let lacks = || vec![Mismatch::new("no zero-copy sends", &[KERNEL])];
        assert_eq!(judge("x", lacks(), vec![], "").status, Status::Unsupported);
        let mut mixed = lacks();
        mixed.push(Mismatch::new("io_uring read bytes", &[IO_URING]));
        let r = judge("x", mixed, vec![cap(IO_URING, "unavailable")], "");
        assert_eq!(r.status, Status::Degraded);
        assert_eq!(r.capabilities, [IO_URING]);
    }

    #[test]
    fn error_lines() {
        let err = "warning: x\nzcprof: error: the kernel refused: too large\nVerifier output";
        assert_eq!(
            error_line(err),
            "zcprof: error: the kernel refused: too large"
        );
        assert_eq!(error_line("\n  boom  \n"), "boom");
        assert_eq!(one_line(&"x".repeat(500)).chars().count(), LINE_MAX + 1);
        let doc: Value = serde_json::json!({"capabilities": [
            {"name": "io_uring", "state": "unavailable", "why": "old kernel"}]});
        assert_eq!(
            capabilities(&doc),
            [cap(IO_URING, "unavailable")].map(|mut c| {
                c.why = "old kernel".into();
                c
            })
        );
        assert!(capabilities(&serde_json::json!({})).is_empty());
    }
}
