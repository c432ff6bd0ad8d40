//! `GET /events` (verdict changes, newest first, JSON) and
//! `GET /history[?format=json|csv]` (every poll kept, oldest first).

use std::fmt::Write as _;

use serde::Serialize;

use crate::history::{Event, History, Sample};

/// The history's lock, poisoned or not: a panic while recording leaves
/// whole samples behind.
fn read<T>(history: &std::sync::Mutex<History>, view: impl FnOnce(&History) -> T) -> T {
    let history = history.lock().unwrap_or_else(|poison| poison.into_inner());
    view(&history)
}

#[derive(Serialize)]
struct Events {
    events: Vec<Event>,
}

/// `/events`.
pub fn events(history: &std::sync::Mutex<History>) -> String {
    let events = read(history, History::events);
    pretty(&Events { events })
}

#[derive(Serialize)]
struct Samples {
    keep_seconds: f64,
    pools: Vec<String>,
    samples: Vec<Sample>,
}

/// `/history?format=json`.
pub fn json(history: &std::sync::Mutex<History>) -> String {
    let (keep, (pools, samples)) = read(history, |h| (h.keep(), h.samples()));
    pretty(&Samples {
        keep_seconds: keep.as_secs_f64(),
        pools,
        samples,
    })
}

/// `/history?format=csv`: `t` (seconds from the first sample) and `lag`
/// first, as a hand-written trace has them, then the other inputs, then
/// per pool `<pool>_target`, `<pool>_verdict`, `<pool>_weight`,
/// `<pool>_reason`. An empty cell is unknown.
pub fn csv(history: &std::sync::Mutex<History>) -> String {
    let (pools, samples) = read(history, History::samples);
    let mut out = String::from("t,lag,source,estimated,io_thread,sql_thread,errno,error,at");
    for pool in &pools {
        let _ = write!(
            out,
            ",{pool}_target,{pool}_verdict,{pool}_weight,{pool}_reason"
        );
    }
    out.push('\n');
    let start = samples.first().map_or(0, |first| first.at_ms);
    for sample in &samples {
        let inputs = &sample.inputs;
        let cell = |value: Option<String>| value.unwrap_or_default();
        let _ = write!(
            out,
            "{:.3},{},{},{},{},{},{},{},{}",
            sample.at_ms.saturating_sub(start) as f64 / 1e3,
            cell(inputs.lag.map(|lag| format!("{lag:.3}"))),
            inputs.source.unwrap_or_default(),
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
    out
}

/// A CSV cell: quoted when it holds a comma, a quote or a line break.
fn quoted(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

fn pretty(value: &impl Serialize) -> String {
    let mut body = serde_json::to_string_pretty(value).expect("history always serializes");
    body.push('\n');
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_with_commas_or_quotes_are_quoted() {
        assert_eq!(quoted("lag 3.0s"), "lag 3.0s");
        assert_eq!(
            quoted("lag 3.0s; unknown pool a,b"),
            "\"lag 3.0s; unknown pool a,b\""
        );
        assert_eq!(quoted("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
