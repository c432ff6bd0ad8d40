//! `GET /`: one self-contained HTML page for a person on the host (or
//! through a port-forward): every pool's verdict in large type, the
//! maintenance state, a chart of lag and weights over the last 15 minutes
//! with the thresholds and the verdict changes on it, the last changes and
//! the last error. Inline SVG drawn here, no script, no external asset: it
//! works air-gapped, and refreshes itself every few seconds.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::html::escape;
use crate::answer::Reported;
use crate::config::Thresholds;
use crate::fleet::Fleet;
use crate::history::{Event, History, Sample};
use crate::snapshot::Snapshot;

/// How far back the chart reaches.
const WINDOW: Duration = Duration::from_secs(15 * 60);
/// The shortest time the chart spans, for a remora that has just started.
const MIN_SPAN: Duration = Duration::from_secs(60);
/// Events listed under the chart.
const LISTED: usize = 10;
const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 280.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 48.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;
/// Weight lines, one colour per pool in order.
const COLOURS: [&str; 6] = [
    "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// The page of one server: `server` is what it watches (`user@host:port`),
/// `target` its name in a fleet, carried into every link.
pub fn render(snapshot: &Snapshot, now: Instant, server: &str, target: Option<&str>) -> String {
    let (pools, samples, events) = {
        let history = snapshot.history.lock().unwrap_or_else(|p| p.into_inner());
        let (pools, samples) = window(&history);
        (pools, samples, history.events())
    };
    let mut page = String::with_capacity(64 * 1024);
    page.push_str(HEAD);
    let name = target.map_or_else(String::new, |name| format!("{} — ", escape(name)));
    let _ = writeln!(
        page,
        "<p class=\"server\" id=\"server\">{name}watching <b>{}</b></p>",
        escape(server)
    );
    verdicts(&mut page, snapshot, now);
    page.push_str("<h2>Lag and weights, up to the last 15 minutes</h2>\n");
    chart(
        &mut page,
        &pools,
        &samples,
        &events,
        &snapshot.settings.thresholds,
    );
    let (amp, ask) = match target {
        Some(name) => {
            let name = form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>();
            (format!("&amp;target={name}"), format!("?target={name}"))
        }
        None => (String::new(), String::new()),
    };
    let _ = writeln!(
        page,
        "<p class=\"links\">Everything kept: <a href=\"/history?format=csv{amp}\">history (CSV)</a>, \
         <a href=\"/history{ask}\">JSON</a>, <a href=\"/events{ask}\">events</a>, \
         <a href=\"/status{ask}\">status</a>, <a href=\"/metrics\">metrics</a>{}.</p>",
        if target.is_some() {
            ", <a href=\"/\">every target</a>"
        } else {
            ""
        }
    );
    event_list(&mut page, &events);
    last_error(&mut page, snapshot, &samples);
    page.push_str("</body>\n</html>\n");
    page
}

const HEAD: &str = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
<meta http-equiv=\"refresh\" content=\"5\">\n<title>remora</title>\n<style>\n\
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}\n\
.pools{display:flex;flex-wrap:wrap;gap:1em}\n\
.pool{padding:.8em 1.2em;border-radius:.5em;min-width:14em;color:#fff}\n\
.pool .name{font-size:1em;opacity:.9}\n.pool .verdict{font-size:2.4em;font-weight:700}\n\
.pool .reason{font-size:1em}\n.up{background:#2e7d32}.partial{background:#f9a825;color:#222}\n\
.drain{background:#ef6c00}.maint{background:#6a1b9a}.down{background:#c62828}\n\
.maintenance{margin:.8em 0;font-size:1.2em}\n\
table{border-collapse:collapse}td,th{padding:.2em .8em;text-align:left;border-bottom:1px solid #ddd}\n\
svg{background:#fff;border:1px solid #ddd}\n.error{color:#c62828}\n\
.partial-text{color:#8d6e00}.drain-text{color:#ef6c00}.ok{color:#2e7d32}\n\
.topology svg{margin:.3em 0 1em}.place rect{stroke:#555;stroke-width:1}.place text{font-size:13px}\n\
.writer rect{fill:#c8e6c9}.follows_writer rect{fill:#f1f8e9}.waiting rect{fill:#fff59d}\n\
.not_the_writer rect,.no_writer rect{fill:#ffcdd2}.follows_elsewhere rect{fill:#ffe0b2}\n\
.aside rect{fill:#eeeeee}.outside rect{fill:#fff;stroke-dasharray:4 3}\n\
</style>\n</head>\n<body>\n<h1>remora</h1>\n";

/// A fleet's page: a row per target with its answers, lag and last
/// change; each name links to that target's own page.
pub fn overview(fleet: &Fleet, now: Instant) -> String {
    let mut page = String::with_capacity(256 * fleet.targets.len() + 4096);
    page.push_str(HEAD);
    let _ = writeln!(
        page,
        "<p class=\"server\">{} targets. <a href=\"/status\">status</a>, \
         <a href=\"/metrics\">metrics</a>.</p>",
        fleet.targets.len()
    );
    if let Some(file) = &fleet.targets_file {
        let _ = match (&file.error, &file.held) {
            (None, None) => writeln!(
                page,
                "<p>targets_file {}: read.</p>",
                escape(&file.path.display().to_string())
            ),
            (None, Some(why)) => writeln!(
                page,
                "<p class=\"error\">targets_file {}: held back ({}).</p>",
                escape(&file.path.display().to_string()),
                escape(why)
            ),
            (Some(why), _) => writeln!(
                page,
                "<p class=\"error\">targets_file {}: not used ({}); the previous targets stay.</p>",
                escape(&file.path.display().to_string()),
                escape(why)
            ),
        };
    }
    if let Some(clusters) = &fleet.clusters {
        let place_of = |name: &str| {
            let snapshot = Arc::clone(&fleet.targets.get(name)?.snapshots.borrow());
            snapshot.placed.as_ref().map(|placed| placed.place.clone())
        };
        super::clusters::section(&mut page, &clusters.topology(), place_of);
    }
    page.push_str(
        "<table id=\"targets\">\n<tr><th>target</th><th>server</th><th>answers</th>\
         <th>lag</th><th>last change</th></tr>\n",
    );
    for (name, watched) in &fleet.targets {
        let snapshot = Arc::clone(&watched.snapshots.borrow());
        let answers: Vec<String> = (snapshot.every_pool())
            .map(|pool| {
                let answer = snapshot.answer(now, pool);
                format!(
                    "<span class=\"{}\">{}: {}</span>",
                    class_of(answer),
                    escape(pool.label()),
                    escape(answer.text())
                )
            })
            .collect();
        let lag = (snapshot.assessment.health.lag()).map_or_else(
            || "–".to_owned(),
            |lag| format!("{:.1} s", lag.value.as_secs_f64()),
        );
        let last_change = {
            let history = snapshot.history.lock().unwrap_or_else(|p| p.into_inner());
            (history.last_event())
                .map(|event| {
                    format!(
                        "{} {} → {}",
                        rfc3339_ms(event.at_ms),
                        escape(&event.from),
                        escape(&event.to)
                    )
                })
                .unwrap_or_default()
        };
        let link = form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>();
        let _ = writeln!(
            page,
            "<tr data-target=\"{}\"><td><a href=\"/?target={link}\">{}</a></td><td>{}</td>\
             <td>{}</td><td>{lag}</td><td>{last_change}</td></tr>",
            escape(name),
            escape(name),
            escape(&watched.server),
            answers.join("<br>"),
        );
    }
    page.push_str("</table>\n</body>\n</html>\n");
    page
}

fn class_of(answer: &crate::answer::Answer) -> &'static str {
    match answer.reported {
        Reported::Up if answer.weight == 100 => "ok",
        Reported::Up => "partial-text",
        Reported::Drain | Reported::Maint => "drain-text",
        Reported::Down => "error",
    }
}

/// Every pool's answer in large type, and the maintenance state.
fn verdicts(page: &mut String, snapshot: &Snapshot, now: Instant) {
    page.push_str("<div class=\"pools\" id=\"verdicts\">\n");
    for pool in snapshot.every_pool() {
        let answer = snapshot.answer(now, pool);
        let (class, big) = match answer.reported {
            Reported::Up if answer.weight == 100 => ("up", "UP 100%".to_owned()),
            Reported::Up => ("partial", format!("UP {}%", answer.weight)),
            Reported::Drain => ("drain", "DRAIN".to_owned()),
            Reported::Maint => ("maint", "MAINT".to_owned()),
            Reported::Down => ("down", "DOWN".to_owned()),
        };
        let _ = writeln!(
            page,
            "<div class=\"pool {class}\" data-pool=\"{}\"><div class=\"name\">{}</div>\
             <div class=\"verdict\">{big}</div><div class=\"reason\">{}</div></div>",
            escape(pool.label()),
            escape(pool.label()),
            escape(&answer.reason),
        );
    }
    page.push_str("</div>\n");
    let maintenance = match &snapshot.maintenance {
        Some(m) => format!(
            "Maintenance <b>on</b> ({}): {}",
            escape(&m.source.to_string()),
            escape(&m.text())
        ),
        None => "Maintenance off.".to_owned(),
    };
    let _ = writeln!(
        page,
        "<p class=\"maintenance\" id=\"maintenance\">{maintenance}</p>"
    );
    if let (Some(lag), Some(trend)) = (snapshot.assessment.health.lag(), snapshot.trend) {
        let direction = match trend.eta_seconds {
            Some(eta) => format!("catching up: back under full weight in about {eta:.0} s"),
            None if trend.rate > 0.01 => "falling behind".to_owned(),
            None => "steady".to_owned(),
        };
        let _ = writeln!(
            page,
            "<p id=\"trend\">Lag {:.1} s, {direction} ({:+.2} s per second).</p>",
            lag.value.as_secs_f64(),
            trend.rate
        );
    }
}

/// Most samples the chart draws: about two per horizontal pixel. A longer
/// window is thinned while it is copied, so a refresh never copies the
/// whole history (15 minutes of 20 ms polls is 45,000 samples).
const MAX_POINTS: usize = 2 * WIDTH as usize;

/// The samples of the last [`WINDOW`] (at most [`MAX_POINTS`]), with the
/// pool labels.
fn window(history: &History) -> (Vec<String>, Vec<Sample>) {
    let from = crate::units::millis_since_epoch(SystemTime::now())
        .saturating_sub(WINDOW.as_millis() as u64);
    (history.pools().to_vec(), history.recent(from, MAX_POINTS))
}

/// What a chart shows: the samples up to `end_ms`, at most `longest` of them.
pub struct Chart<'a> {
    pub pools: &'a [String],
    pub samples: &'a [Sample],
    pub events: &'a [Event],
    /// The default policy's, drawn as dashed lines.
    pub thresholds: &'a Thresholds,
    pub end_ms: u64,
    pub longest: Duration,
}

/// The chart alone, as a standalone SVG document (`remora --replay --svg`).
pub fn svg(chart: &Chart<'_>) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    draw(&mut out, chart);
    out
}

fn chart(
    page: &mut String,
    pools: &[String],
    samples: &[Sample],
    events: &[Event],
    thresholds: &Thresholds,
) {
    draw(
        page,
        &Chart {
            pools,
            samples,
            events,
            thresholds,
            end_ms: crate::units::millis_since_epoch(SystemTime::now()),
            longest: WINDOW,
        },
    );
}

/// Where a time, a lag and a weight go on the chart.
struct Scale {
    start: u64,
    span: u64,
    /// The lag at the top of the plot, seconds.
    top: f64,
    plot_w: f64,
    plot_h: f64,
}

impl Scale {
    /// Up to `longest` of the samples, or since the first when that is more
    /// recent (a remora just started), never less than a minute; room above
    /// the highest lag, and for the first threshold at least.
    fn of(chart: &Chart<'_>) -> Scale {
        let first = chart.samples.first().map_or(chart.end_ms, |s| s.at_ms);
        let span = chart.end_ms.saturating_sub(first).clamp(
            MIN_SPAN.as_millis() as u64,
            u64::try_from(chart.longest.as_millis()).unwrap_or(u64::MAX),
        );
        let highest = (chart.samples.iter())
            .filter_map(|s| s.inputs.lag)
            .fold(0.0, f64::max);
        Scale {
            start: chart.end_ms.saturating_sub(span),
            span,
            top: (highest * 1.25)
                .max(chart.thresholds.full_weight_below.as_secs_f64() * 2.0)
                .max(1.0),
            plot_w: WIDTH - LEFT - RIGHT,
            plot_h: HEIGHT - TOP - BOTTOM,
        }
    }

    fn x(&self, at_ms: u64) -> f64 {
        LEFT + self.plot_w * (at_ms.saturating_sub(self.start) as f64 / self.span as f64)
    }

    fn lag_y(&self, lag: f64) -> f64 {
        TOP + self.plot_h * (1.0 - (lag / self.top).min(1.0))
    }

    fn weight_y(&self, weight: u8) -> f64 {
        TOP + self.plot_h * (1.0 - f64::from(weight) / 100.0)
    }
}

/// Lag (left axis, seconds) and every pool's weight (right axis, %), the
/// default policy's thresholds as dashed lines, changes as marks on the
/// time axis.
fn draw(page: &mut String, chart: &Chart<'_>) {
    let scale = Scale::of(chart);
    let _ = writeln!(
        page,
        "<svg id=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"lag and weights\">"
    );
    let _ = writeln!(
        page,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#ccc\"/>",
        scale.plot_w, scale.plot_h
    );
    threshold_lines(page, &scale, chart.thresholds);
    change_marks(page, &scale, chart.events);
    series(page, &scale, chart.pools, chart.samples);
    axes(
        page,
        scale.top,
        scale.span,
        scale.plot_w,
        scale.plot_h,
        chart.pools,
    );
    page.push_str("</svg>\n");
}

/// The thresholds within the plot, as dashed lines with their names.
fn threshold_lines(page: &mut String, scale: &Scale, thresholds: &Thresholds) {
    let lines = [
        ("full weight below", thresholds.full_weight_below),
        ("min weight at", thresholds.min_weight_at),
        ("drain at", thresholds.drain_at),
        ("down at", thresholds.down_at),
    ];
    for (name, at) in lines
        .into_iter()
        .filter(|(_, at)| at.as_secs_f64() <= scale.top)
    {
        let y = scale.lag_y(at.as_secs_f64());
        let _ = writeln!(
            page,
            "<line class=\"threshold\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" \
             stroke=\"#999\" stroke-dasharray=\"4 4\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" \
             fill=\"#777\">{name} {}s</text>",
            LEFT + scale.plot_w,
            LEFT + 4.0,
            y - 2.0,
            at.as_secs()
        );
    }
}

/// Each verdict change in the plot's time, as a vertical mark with its story.
fn change_marks(page: &mut String, scale: &Scale, events: &[Event]) {
    for event in events.iter().filter(|e| e.at_ms >= scale.start) {
        let x = scale.x(event.at_ms);
        let _ = writeln!(
            page,
            "<line class=\"event\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{TOP}\" y2=\"{:.1}\" stroke=\"#e53935\" \
             stroke-opacity=\".5\"><title>{} {}: {} -&gt; {}</title></line>",
            TOP + scale.plot_h,
            escape(&rfc3339_ms(event.at_ms)),
            escape(&event.pool),
            escape(&event.from),
            escape(&event.to)
        );
    }
}

/// The lag line, and one weight line per pool.
fn series(page: &mut String, scale: &Scale, pools: &[String], samples: &[Sample]) {
    let lag =
        path((samples.iter()).map(|s| (scale.x(s.at_ms), s.inputs.lag.map(|l| scale.lag_y(l)))));
    let _ = writeln!(
        page,
        "<path class=\"lag\" d=\"{lag}\" fill=\"none\" stroke=\"#d32f2f\" stroke-width=\"2\"/>"
    );
    for (i, pool) in pools.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let weights = path(samples.iter().map(|s| {
            let weight = s.pools.get(i).map(|p| scale.weight_y(p.published.weight));
            (scale.x(s.at_ms), weight)
        }));
        let _ = writeln!(
            page,
            "<path class=\"weight\" data-pool=\"{}\" d=\"{weights}\" fill=\"none\" stroke=\"{colour}\" \
             stroke-width=\"1.5\"/>",
            escape(pool)
        );
    }
}

/// Axis labels and the legend.
fn axes(page: &mut String, top: f64, span: u64, plot_w: f64, plot_h: f64, pools: &[String]) {
    let bottom = TOP + plot_h;
    let ago = humantime::format_duration(Duration::from_secs(span.div_ceil(1000)));
    let _ = writeln!(
        page,
        "<text x=\"4\" y=\"{:.1}\" font-size=\"11\" fill=\"#d32f2f\">{top:.0}s</text>\
         <text x=\"4\" y=\"{bottom:.1}\" font-size=\"11\" fill=\"#d32f2f\">0s lag</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">100%</text>\
         <text x=\"{:.1}\" y=\"{bottom:.1}\" font-size=\"11\">0%</text>\
         <text x=\"{LEFT}\" y=\"{:.1}\" font-size=\"11\">{ago} ago</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">now</text>",
        TOP + 10.0,
        LEFT + plot_w + 4.0,
        TOP + 10.0,
        LEFT + plot_w + 4.0,
        bottom + 18.0,
        LEFT + plot_w - 24.0,
        bottom + 18.0,
    );
    let mut legend = String::from("lag (red)");
    for (i, pool) in pools.iter().enumerate() {
        let _ = write!(
            legend,
            ", weight {} ({})",
            escape(pool),
            COLOURS[i % COLOURS.len()]
        );
    }
    let _ = writeln!(
        page,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#555\">{legend}</text>",
        LEFT + 90.0,
        bottom + 18.0
    );
}

/// An SVG path through the points; an unknown value breaks the line.
fn path(points: impl Iterator<Item = (f64, Option<f64>)>) -> String {
    let mut d = String::new();
    let mut drawing = false;
    for (x, y) in points {
        match y {
            Some(y) => {
                let _ = write!(d, "{}{x:.1},{y:.1} ", if drawing { "L" } else { "M" });
                drawing = true;
            }
            None => drawing = false,
        }
    }
    d
}

fn event_list(page: &mut String, events: &[Event]) {
    page.push_str("<h2>Last changes</h2>\n");
    if events.is_empty() {
        page.push_str("<p id=\"events\">No change since remora started.</p>\n");
        return;
    }
    page.push_str("<table id=\"events\">\n<tr><th>at</th><th>pool</th><th>from</th><th>to</th><th>lag</th></tr>\n");
    for event in events.iter().take(LISTED) {
        let lag = event
            .inputs
            .lag
            .map_or("unknown".to_owned(), |lag| format!("{lag:.1}s"));
        let _ = writeln!(
            page,
            "<tr class=\"event\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{lag}</td></tr>",
            escape(&rfc3339_ms(event.at_ms)),
            escape(&event.pool),
            escape(&event.from),
            escape(&event.to),
        );
    }
    page.push_str("</table>\n");
}

/// The last poll's error, or the last one the history holds.
fn last_error(page: &mut String, snapshot: &Snapshot, samples: &[Sample]) {
    let now = snapshot
        .observation
        .result
        .as_ref()
        .err()
        .map(|err| err.phrase());
    let earlier = samples
        .iter()
        .rev()
        .find_map(|s| s.inputs.error.map(|kind| (s.at_ms, kind)));
    let text = match (now, earlier) {
        (Some(phrase), _) => format!("<span class=\"error\">Now: {}</span>", escape(&phrase)),
        (None, Some((at, kind))) => format!("Last at {}: {kind}", escape(&rfc3339_ms(at))),
        (None, None) => "None in the last 15 minutes.".to_owned(),
    };
    let _ = writeln!(page, "<h2>Last error</h2>\n<p id=\"last-error\">{text}</p>");
}

fn rfc3339_ms(at_ms: u64) -> String {
    crate::units::rfc3339_ms(at_ms).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_break_where_the_value_is_unknown() {
        let d = path(
            [
                (1.0, Some(2.0)),
                (2.0, Some(3.0)),
                (3.0, None),
                (4.0, Some(5.0)),
            ]
            .into_iter(),
        );
        assert_eq!(d, "M1.0,2.0 L2.0,3.0 M4.0,5.0 ");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape("<b>\"x\" & y</b>"),
            "&lt;b&gt;&quot;x&quot; &amp; y&lt;/b&gt;"
        );
    }
}
