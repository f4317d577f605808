//! The per-row error report of a rejected file. Pure.

use super::rows::RowError;

/// Rejected rows of one import: the first `keep` in full, all of them counted, so a
/// file of a million bad rows costs a bounded report and bounded memory.
#[derive(Debug, Clone)]
pub struct Rejections {
    kept: Vec<RowError>,
    keep: usize,
    rows: u64,
    last_line: Option<u64>,
}

impl Rejections {
    pub fn new(keep: usize) -> Self {
        Self {
            kept: Vec::new(),
            keep,
            rows: 0,
            last_line: None,
        }
    }

    /// Adds one row's errors (one per bad cell).
    pub fn add(&mut self, errors: impl IntoIterator<Item = RowError>) {
        for error in errors {
            if self.last_line != Some(error.line) {
                self.rows += 1;
                self.last_line = Some(error.line);
            }
            if self.kept.len() < self.keep {
                self.kept.push(error);
            }
        }
    }

    /// Rows with at least one error.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn errors(&self) -> &[RowError] {
        &self.kept
    }

    /// Whether some errors were counted but not kept.
    pub fn truncated(&self) -> bool {
        self.kept.len() >= self.keep && self.rows > 0
    }

    /// One sentence for the API and the event: how many rows, and the first error.
    pub fn summary(&self) -> String {
        let first = self.kept.iter().min_by_key(|e| e.line);
        match first {
            None => "no rows were rejected".to_owned(),
            Some(e) => format!(
                "{} row{} rejected; the first, line {}: `{}` {}",
                self.rows,
                if self.rows == 1 { "" } else { "s" },
                e.line,
                e.column,
                e.message
            ),
        }
    }

    /// The report as CSV (`line,column,value,message`), sorted by line, cells that a
    /// spreadsheet would run as a formula neutralised.
    pub fn to_csv(&self) -> anyhow::Result<Vec<u8>> {
        let mut errors: Vec<&RowError> = self.kept.iter().collect();
        errors.sort_by_key(|e| e.line);
        let mut out = csv::Writer::from_writer(Vec::new());
        out.write_record(["line", "column", "value", "message"])?;
        for e in errors {
            out.write_record([
                e.line.to_string(),
                neutralise(&e.column),
                neutralise(&e.value),
                neutralise(&e.message),
            ])?;
        }
        if self.truncated() {
            out.write_record([
                String::new(),
                String::new(),
                String::new(),
                format!(
                    "only the first {} errors are listed; {} rows were rejected in all",
                    self.keep, self.rows
                ),
            ])?;
        }
        Ok(out.into_inner()?)
    }
}

/// A cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return is a formula
/// to a spreadsheet (CSV injection); a leading apostrophe makes it text, as OWASP
/// recommends. The value is still readable to a person.
pub fn neutralise(cell: &str) -> String {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}"),
        _ => cell.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_neutralised_and_plain_text_is_kept() {
        assert_eq!(neutralise("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(neutralise("-2+3"), "'-2+3");
        assert_eq!(neutralise("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(neutralise("\tx"), "'\tx");
        assert_eq!(neutralise("m-1"), "m-1");
        assert_eq!(neutralise(""), "");
    }

    #[test]
    fn the_report_lists_rows_in_order_and_counts_rows_not_cells() {
        let mut r = Rejections::new(100);
        r.add([RowError::new(9, "kwh", "x", "is not a number")]);
        r.add([
            RowError::new(3, "der_id", "=1+1", "is not a UUID"),
            RowError::new(3, "kwh", "", "is required"),
        ]);
        assert_eq!(r.rows(), 2);
        let text = String::from_utf8(r.to_csv().expect("csv")).expect("utf-8");
        assert_eq!(
            text,
            "line,column,value,message\n3,der_id,'=1+1,is not a UUID\n3,kwh,,is required\n9,kwh,x,is not a number\n"
        );
        assert_eq!(
            r.summary(),
            "2 rows rejected; the first, line 3: `der_id` is not a UUID"
        );
    }

    #[test]
    fn a_long_report_is_cut_and_says_so() {
        let mut r = Rejections::new(2);
        for line in 2..12 {
            r.add([RowError::new(line, "kwh", "x", "is not a number")]);
        }
        assert_eq!(r.rows(), 10);
        let text = String::from_utf8(r.to_csv().expect("csv")).expect("utf-8");
        assert_eq!(text.lines().count(), 4);
        assert!(text.contains("10 rows were rejected in all"));
    }
}
