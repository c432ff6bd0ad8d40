//! The trace format: the CSV `GET /history?format=csv` writes and
//! `--replay` reads, written and parsed here only.
//!
//! A header, then one row per poll: `t` (seconds from the first row, by the
//! monotonic clock) and `lag` (seconds; empty: unknown) first, as a
//! hand-written trace has them, then the other inputs (`source`,
//! `estimated`, `io_thread`, `sql_thread`, `errno`, `error`), `at` (the wall
//! clock, milliseconds since 1970), then per pool `<pool>_target`,
//! `<pool>_verdict`, `<pool>_weight`, `<pool>_reason`. A reader needs only
//! `t` and `lag`; any column it does not know is ignored. Cells holding a
//! comma, a quote or a line break are quoted.

use std::fmt::{self, Write as _};

use super::{Inputs, Sample};
use crate::health::LagFrom;
use crate::probe::{ErrorKind, ThreadState};

/// The input columns, in order, after which each pool's four follow.
const INPUT_COLUMNS: &str = "t,lag,source,estimated,io_thread,sql_thread,errno,error,at";

/// The header line for samples of `pools`.
pub fn write_header(pools: &[String], out: &mut String) {
    out.push_str(INPUT_COLUMNS);
    for pool in pools {
        for column in ["target", "verdict", "weight", "reason"] {
            let _ = write!(out, ",{}", quoted(&format!("{pool}_{column}")));
        }
    }
    out.push('\n');
}

/// One sample's row; `t` counts from `first_ms` (a sample's `mono_ms`).
pub fn write_row(sample: &Sample, first_ms: u64, out: &mut String) {
    let inputs = &sample.inputs;
    let cell = |value: Option<String>| value.unwrap_or_default();
    let _ = write!(
        out,
        "{:.3},{},{},{},{},{},{},{},{}",
        sample.mono_ms.saturating_sub(first_ms) as f64 / 1e3,
        // To the microsecond: a replay computes the same weights and
        // reasons from it as the live poll did.
        cell(inputs.lag.map(|lag| format!("{lag:.6}"))),
        inputs.source.map(LagFrom::as_str).unwrap_or_default(),
        inputs.estimated,
        cell(inputs.io_thread.map(|t| t.to_string())),
        cell(inputs.sql_thread.map(|t| t.to_string())),
        cell(inputs.errno.map(|e| e.to_string())),
        cell(inputs.error.map(|e| e.to_string())),
        sample.at_ms,
    );
    for pool in &sample.pools {
        let _ = write!(
            out,
            ",{},{},{},{}",
            pool.target.state,
            pool.published.state,
            pool.published.weight,
            quoted(&pool.reason)
        );
    }
    out.push('\n');
}

/// A CSV cell: quoted when it holds a comma, a quote or a line break.
fn quoted(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// A trace that cannot be read: the line and the column say where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceError(String);

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TraceError {}

/// One row of a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Seconds from the start.
    pub t: f64,
    pub inputs: Inputs,
}

/// Latest `t` a trace may have, in seconds (some 31 years): beyond it a
/// time no longer fits the clock replay runs on.
pub const MAX_T: f64 = 1e9;

/// Reads a trace.
pub fn parse(text: &str) -> Result<Vec<Row>, TraceError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty());
    let (_, header) = lines
        .next()
        .ok_or_else(|| TraceError("line 1: no header (t,lag,...)".into()))?;
    let names: Vec<String> = cells(header)
        .into_iter()
        .map(|n| n.trim().to_owned())
        .collect();
    let at = |name: &str| names.iter().position(|n| n == name);
    let (Some(t_at), Some(lag_at)) = (at("t"), at("lag")) else {
        return Err(TraceError(format!(
            "line 1: the header needs columns t and lag, got {header:?}"
        )));
    };
    let columns = Columns {
        t: t_at,
        lag: lag_at,
        source: at("source"),
        estimated: at("estimated"),
        io_thread: at("io_thread"),
        sql_thread: at("sql_thread"),
        errno: at("errno"),
        error: at("error"),
    };
    let mut rows: Vec<Row> = Vec::new();
    for (index, line) in lines {
        let row = columns.row(index + 1, &names, &cells(line))?;
        if let Some(last) = rows.last()
            && row.t < last.t
        {
            return Err(TraceError(format!(
                "line {}, column {} (t): {} is before the previous row's {}",
                index + 1,
                t_at + 1,
                row.t,
                last.t
            )));
        }
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(TraceError("line 2: the trace has no rows".into()));
    }
    Ok(rows)
}

/// Where each input is, by column.
struct Columns {
    t: usize,
    lag: usize,
    source: Option<usize>,
    estimated: Option<usize>,
    io_thread: Option<usize>,
    sql_thread: Option<usize>,
    errno: Option<usize>,
    error: Option<usize>,
}

impl Columns {
    fn row(&self, line: usize, names: &[String], cells: &[String]) -> Result<Row, TraceError> {
        let bad = |column: usize, why: String| {
            TraceError(format!(
                "line {line}, column {} ({}): {why}",
                column + 1,
                names[column]
            ))
        };
        let cell = |column: usize| cells.get(column).map_or("", |c| c.trim());
        let optional = |column: Option<usize>| column.map(cell).filter(|c| !c.is_empty());
        let t: f64 = cell(self.t)
            .parse()
            .ok()
            .filter(|t: &f64| t.is_finite() && (0.0..=MAX_T).contains(t))
            .ok_or_else(|| {
                bad(
                    self.t,
                    format!(
                        "{:?} is not a number of seconds from 0 to {MAX_T}",
                        cell(self.t)
                    ),
                )
            })?;
        let lag = match cell(self.lag) {
            "" => None,
            text => Some(
                text.parse::<f64>()
                    .ok()
                    .filter(|lag| {
                        lag.is_finite()
                            && (0.0..=crate::health::MAX_PLAUSIBLE_LAG.as_secs_f64()).contains(lag)
                    })
                    .ok_or_else(|| bad(self.lag, format!("{text:?} is not a lag in seconds")))?,
            ),
        };
        let label = |column: Option<usize>,
                     all: &[&'static str]|
         -> Result<Option<&'static str>, TraceError> {
            match optional(column) {
                None => Ok(None),
                Some(text) => all
                    .iter()
                    .find(|label| **label == text)
                    .copied()
                    .map(Some)
                    .ok_or_else(|| {
                        bad(
                            column.expect("a cell"),
                            format!("{text:?} is not one of {}", all.join(", ")),
                        )
                    }),
            }
        };
        let threads: Vec<&'static str> = ThreadState::ALL.iter().map(|s| s.as_str()).collect();
        let kinds: Vec<&'static str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        let sources: Vec<&'static str> = LagFrom::ALL.iter().map(|s| s.as_str()).collect();
        let thread = |column| -> Result<Option<ThreadState>, TraceError> {
            Ok(label(column, &threads)?.and_then(ThreadState::from_label))
        };
        Ok(Row {
            t,
            inputs: Inputs {
                lag,
                source: label(self.source, &sources)?.and_then(LagFrom::from_label),
                estimated: label(self.estimated, &["true", "false"])? == Some("true"),
                io_thread: thread(self.io_thread)?,
                sql_thread: thread(self.sql_thread)?,
                errno: match optional(self.errno) {
                    None => None,
                    Some(text) => Some(text.parse().map_err(|_| {
                        bad(
                            self.errno.expect("a cell"),
                            format!("{text:?} is not an error number"),
                        )
                    })?),
                },
                error: label(self.error, &kinds)?.and_then(ErrorKind::from_label),
            },
        })
    }
}

/// A CSV line's cells: commas split, double quotes quote (`""` is a quote).
fn cells(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                out.last_mut().expect("a cell").push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(String::new()),
            (c, _) => out.last_mut().expect("a cell").push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_with_commas_or_quotes_are_quoted_and_read_back() {
        assert_eq!(quoted("lag 3.0s"), "lag 3.0s");
        assert_eq!(
            quoted("lag 3.0s; unknown pool a,b"),
            "\"lag 3.0s; unknown pool a,b\""
        );
        assert_eq!(quoted("say \"hi\""), "\"say \"\"hi\"\"\"");
        let mut header = String::new();
        write_header(&["a,b".to_owned()], &mut header);
        let names = cells(header.trim_end());
        assert_eq!(names.len(), 9 + 4, "{header}");
        assert_eq!(names[9], "a,b_target");
    }

    #[test]
    fn a_malformed_trace_names_the_line_and_the_column() {
        let cases = [
            ("", "line 1"),
            (
                "time,delay\n0,1\n",
                "line 1: the header needs columns t and lag",
            ),
            ("t,lag\n", "no rows"),
            ("t,lag\n0,1\nsoon,2\n", "line 3, column 1 (t)"),
            ("t,lag\n0,1\n1,lots\n", "line 3, column 2 (lag)"),
            ("t,lag\n0,-4\n", "line 2, column 2 (lag)"),
            ("t,lag\n2,1\n1,1\n", "line 3, column 1 (t): 1 is before"),
            (
                "t,lag,io_thread\n0,1,Maybe\n",
                "line 2, column 3 (io_thread): \"Maybe\" is not one of",
            ),
            ("t,lag,errno\n0,1,x\n", "line 2, column 3 (errno)"),
        ];
        for (text, wanted) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(wanted), "{text:?}: {err}");
        }
    }

    #[test]
    fn an_absurd_time_is_refused_naming_the_line_not_a_panic() {
        for t in ["1e20", "1000000001", "-1", "inf", "NaN"] {
            let err = parse(&format!("t,lag\n0,1\n{t},2\n"))
                .expect_err(t)
                .to_string();
            assert!(err.starts_with("line 3, column 1 (t)"), "{t}: {err}");
        }
    }

    #[test]
    fn quoted_cells_hold_commas_and_quotes() {
        assert_eq!(
            cells("a,\"b,c\",\"say \"\"hi\"\"\""),
            ["a", "b,c", "say \"hi\""]
        );
    }
}
