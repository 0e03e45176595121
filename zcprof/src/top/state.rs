//! The screen's state and what each key does to it, kept apart from the terminal so that the
//! keys are tested without one.

use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::{
    Rows,
    model::{self, Interval, Row, SortKey},
};

/// Everything the screen shows besides the counts' source.
#[derive(Debug)]
pub struct App {
    /// What a row is.
    pub rows_by: Rows,
    /// What is watched, as the title says it.
    pub scope: String,
    /// Time between collections.
    pub interval: Duration,
    /// The sort column.
    pub sort: SortKey,
    /// The `/` filter.
    pub filter: String,
    /// The filter is being typed.
    pub editing: bool,
    /// The screen is frozen (collections go on, so that dead threads are still cleared).
    pub paused: bool,
    /// The key help is shown.
    pub help: bool,
    /// The key of the row drilled into.
    pub detail: Option<String>,
    /// First thread shown in the drill-down.
    pub detail_scroll: usize,
    /// The key of the selected row (the selection follows the row when the order changes).
    pub selected: Option<String>,
    /// Rows a page key moves by.
    pub page: usize,
    /// The interval on screen.
    pub shown: Interval,
    /// Collections so far (0: the first interval is not over yet).
    pub collections: u64,
    /// Why the last collection failed, if it did.
    pub error: Option<String>,
    /// `q` or Ctrl-C was pressed.
    pub quit: bool,
}

impl App {
    /// A screen with nothing collected yet.
    pub fn new(rows_by: Rows, scope: String, interval: Duration) -> Self {
        App {
            rows_by,
            scope,
            interval,
            sort: SortKey::CpuCopied,
            filter: String::new(),
            editing: false,
            paused: false,
            help: false,
            detail: None,
            detail_scroll: 0,
            selected: None,
            page: 10,
            shown: Interval::default(),
            collections: 0,
            error: None,
            quit: false,
        }
    }

    /// A new interval is collected: shown unless the screen is paused.
    pub fn collected(&mut self, interval: Interval) {
        self.collections += 1;
        self.error = None;
        if !self.paused {
            self.shown = interval;
        }
    }

    /// The rows on screen, filtered and sorted.
    pub fn rows(&self) -> Vec<Row> {
        model::rows(&self.shown, self.sort, &self.filter)
    }

    /// Index of the selected row in `rows`: the selected key, else the first row.
    pub fn selection(&self, rows: &[Row]) -> Option<usize> {
        if rows.is_empty() {
            return None;
        }
        let found = self
            .selected
            .as_ref()
            .and_then(|k| rows.iter().position(|r| &r.key == k));
        Some(found.unwrap_or(0))
    }

    fn move_selection(&mut self, by: isize) {
        let rows = self.rows();
        let Some(at) = self.selection(&rows) else {
            return;
        };
        let to = at.saturating_add_signed(by).min(rows.len() - 1);
        self.selected = Some(rows[to].key.clone());
    }

    /// What a key does.
    pub fn key(&mut self, k: KeyEvent) {
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            self.quit = true;
            return;
        }
        if self.help {
            // Any key closes the help; `q` still quits.
            self.help = false;
            self.quit = k.code == KeyCode::Char('q');
            return;
        }
        if self.editing {
            match k.code {
                KeyCode::Enter => self.editing = false,
                KeyCode::Esc => {
                    self.filter.clear();
                    self.editing = false;
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                // Alt+key is Esc then the key typed quickly: not text.
                KeyCode::Char(c) if !k.modifiers.contains(KeyModifiers::ALT) => self.filter.push(c),
                _ => {}
            }
            return;
        }
        match k.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char('p') | KeyCode::Char(' ') => self.paused = !self.paused,
            _ if self.detail.is_some() => self.detail_key(k.code),
            _ => self.list_key(k.code),
        }
    }

    fn detail_key(&mut self, code: KeyCode) {
        match code {
            KeyCode::Esc | KeyCode::Backspace | KeyCode::Left => {
                self.detail = None;
                self.detail_scroll = 0;
            }
            KeyCode::Up => self.detail_scroll = self.detail_scroll.saturating_sub(1),
            KeyCode::Down => self.detail_scroll += 1,
            KeyCode::PageUp => self.detail_scroll = self.detail_scroll.saturating_sub(self.page),
            KeyCode::PageDown => self.detail_scroll += self.page,
            KeyCode::Home => self.detail_scroll = 0,
            _ => {}
        }
    }

    fn list_key(&mut self, code: KeyCode) {
        let page = self.page.max(1) as isize;
        match code {
            KeyCode::Char('s') | KeyCode::Right => self.sort = self.sort.next(),
            KeyCode::Char('S') | KeyCode::Left => self.sort = self.sort.prev(),
            KeyCode::Char('/') => self.editing = true,
            KeyCode::Esc => self.filter.clear(),
            KeyCode::Enter => {
                let rows = self.rows();
                if let Some(i) = self.selection(&rows) {
                    self.selected = Some(rows[i].key.clone());
                    self.detail = Some(rows[i].key.clone());
                    self.detail_scroll = 0;
                }
            }
            KeyCode::Up => self.move_selection(-1),
            KeyCode::Down => self.move_selection(1),
            KeyCode::PageUp => self.move_selection(-page),
            KeyCode::PageDown => self.move_selection(page),
            KeyCode::Home => self.move_selection(isize::MIN / 2),
            KeyCode::End => self.move_selection(isize::MAX / 2),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        snapshot::Activity,
        top::model::{Group, Interval},
    };
    use zcprof_common::{Column, Syscall, Transfer};

    fn group(pid: u32, name: &str, copied: u64) -> Group {
        let mut a = Activity::default();
        a.transfers.insert(
            (Syscall::Read, Column::CpuKernelToUser),
            Transfer {
                calls: 1,
                bytes: copied,
                ..Transfer::ZERO
            },
        );
        Group {
            key: pid.to_string(),
            pid: Some(pid),
            name: name.into(),
            activity: a,
            threads: Vec::new(),
        }
    }

    fn app() -> App {
        let mut app = App::new(Rows::Process, "all".into(), Duration::from_secs(1));
        app.collected(Interval {
            secs: 1.0,
            groups: vec![
                group(1, "init", 10),
                group(2, "dd", 1000),
                group(3, "cat", 100),
            ],
            lost: 0,
        });
        app
    }

    fn press(app: &mut App, code: KeyCode) {
        app.key(KeyEvent::new(code, KeyModifiers::NONE));
    }

    fn order(app: &App) -> Vec<u32> {
        app.rows().iter().filter_map(|r| r.pid).collect()
    }

    #[test]
    fn sorts_by_cpu_copied_then_cycles_columns() {
        let mut app = app();
        assert_eq!(order(&app), [2, 3, 1]);
        press(&mut app, KeyCode::Char('S'));
        press(&mut app, KeyCode::Char('S'));
        assert_eq!(app.sort, SortKey::Name);
        assert_eq!(order(&app), [1, 2, 3]);
        press(&mut app, KeyCode::Right);
        press(&mut app, KeyCode::Char('s'));
        assert_eq!(app.sort, SortKey::CpuCopied);
        press(&mut app, KeyCode::Left);
        assert_eq!(app.sort, SortKey::Syscalls);
    }

    #[test]
    fn selection_follows_its_row_and_enter_drills_in() {
        let mut app = app();
        assert_eq!(app.selection(&app.rows()), Some(0));
        press(&mut app, KeyCode::Down);
        assert_eq!(app.selected.as_deref(), Some("3"));
        // Sorted by pid, pid 3 is last: the selection moves with it.
        app.sort = SortKey::Name;
        assert_eq!(app.selection(&app.rows()), Some(2));
        press(&mut app, KeyCode::Down);
        assert_eq!(app.selected.as_deref(), Some("3"));
        press(&mut app, KeyCode::Home);
        assert_eq!(app.selected.as_deref(), Some("1"));
        press(&mut app, KeyCode::Enter);
        assert_eq!(app.detail.as_deref(), Some("1"));
        // In the drill-down, s does not sort and Backspace goes back.
        press(&mut app, KeyCode::Char('s'));
        assert_eq!(app.sort, SortKey::Name);
        press(&mut app, KeyCode::Backspace);
        assert_eq!(app.detail, None);
    }

    #[test]
    fn filter_is_typed_kept_and_cleared() {
        let mut app = app();
        press(&mut app, KeyCode::Char('/'));
        for c in "Dq".chars() {
            press(&mut app, KeyCode::Char(c));
        }
        // `q` while typing is text, not quit.
        assert!(!app.quit);
        assert_eq!(order(&app), Vec::<u32>::new());
        press(&mut app, KeyCode::Backspace);
        press(&mut app, KeyCode::Enter);
        assert!(!app.editing);
        assert_eq!(order(&app), [2]);
        press(&mut app, KeyCode::Char('/'));
        press(&mut app, KeyCode::Esc);
        assert_eq!(order(&app), [2, 3, 1]);
    }

    #[test]
    fn pause_help_and_quit() {
        let mut app = app();
        press(&mut app, KeyCode::Char(' '));
        assert!(app.paused);
        app.collected(Interval::default());
        assert_eq!(app.rows().len(), 3, "a paused screen keeps its interval");
        press(&mut app, KeyCode::Char('p'));
        assert!(!app.paused);
        press(&mut app, KeyCode::Char('?'));
        assert!(app.help);
        press(&mut app, KeyCode::Char('x'));
        assert!(!app.help && !app.quit);
        app.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
        assert!(app.quit);
        let mut app = self::app();
        press(&mut app, KeyCode::Char('q'));
        assert!(app.quit);
    }
}
