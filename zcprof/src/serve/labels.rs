//! A group's labels as the exposition writes them: `name="value",…`, escaped once per group.

/// A group's label values, and the labels as the exposition writes them (made once per
/// group rather than at every scrape).
#[derive(Debug)]
pub struct Labels {
    values: Vec<String>,
    /// `name="value",…`, escaped.
    pub rendered: String,
}

impl Labels {
    /// The labels `names` with `values`.
    pub fn new(names: &[&str], values: Vec<String>) -> Self {
        let rendered = render(names, &values);
        Labels { values, rendered }
    }
}

impl std::ops::Deref for Labels {
    type Target = [String];

    fn deref(&self) -> &[String] {
        &self.values
    }
}

/// `name="value",…` of a group, escaped.
fn render(names: &[&str], values: &[String]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in names.iter().zip(values).enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_label(&mut out, name, value);
    }
    out
}

/// `name="value"`, the value escaped (backslash, double quote, newline).
pub fn push_label(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}
