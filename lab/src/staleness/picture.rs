//! A run drawn (plotters, SVG): for each configuration, the staleness of
//! every read over time (short and pooled clients) beside the lagging
//! replica's own lag, and the lagging replica's share of new connections
//! over time.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use super::report::lagging_share;
use super::{Configuration, Run};
use crate::readers::Client;

const SHORT: RGBColor = RGBColor(31, 119, 180);
const POOLED: RGBColor = RGBColor(214, 39, 40);
const LAG: RGBColor = RGBColor(120, 120, 120);

/// Draws `run` into `path`: a row per configuration, staleness on the
/// left, share on the right.
pub fn draw(run: &Run, path: &Path) -> Result<()> {
    let rows = run.reads.len().max(1) as u32;
    let root = SVGBackend::new(path, (1100, 230 * rows + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(|err| anyhow!("{err}"))?;
    let (title, body) = root.split_vertically(40);
    title
        .titled(
            &format!("What readers through HAProxy got: {}", run.scenario.label()),
            ("sans-serif", 22),
        )
        .map_err(|err| anyhow!("{err}"))?;
    let length = run.length.as_secs_f64();
    let highest = run
        .lag
        .iter()
        .map(|(_, lag)| lag.as_secs_f64())
        .chain(run.reads.values().flatten().filter_map(|read| {
            read.outcome
                .as_ref()
                .ok()
                .map(|served| served.staleness.as_secs_f64())
        }))
        .fold(1.0, f64::max)
        .min(200.0);
    for (area, (configuration, reads)) in body
        .split_evenly((rows as usize, 2))
        .chunks(2)
        .zip(&run.reads)
    {
        staleness(&area[0], *configuration, reads, run, (length, highest))?;
        share(&area[1], *configuration, run, length)?;
    }
    root.present().map_err(|err| anyhow!("{err}"))
}

fn staleness<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    configuration: Configuration,
    reads: &[crate::readers::Read],
    run: &Run,
    (length, highest): (f64, f64),
) -> Result<()> {
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{}: staleness of each read (s)", configuration.label()),
            ("sans-serif", 15),
        )
        .margin(6)
        .x_label_area_size(34)
        .y_label_area_size(36)
        .build_cartesian_2d(0.0..length, 0.0..highest)
        .map_err(|err| anyhow!("{err:?}"))?;
    chart
        .configure_mesh()
        .x_desc("s into the run")
        .light_line_style(WHITE)
        .draw()
        .map_err(|err| anyhow!("{err:?}"))?;
    chart
        .draw_series(LineSeries::new(
            run.lag
                .iter()
                .map(|(at, lag)| (at.as_secs_f64(), lag.as_secs_f64())),
            LAG.stroke_width(2),
        ))
        .map_err(|err| anyhow!("{err:?}"))?
        .label("replica1's lag")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], LAG.stroke_width(2)));
    for (client, color) in [(Client::Short, SHORT), (Client::Pooled, POOLED)] {
        let stalest = stalest_per_step(reads, client, highest);
        chart
            .draw_series(LineSeries::new(stalest, color.stroke_width(1)))
            .map_err(|err| anyhow!("{err:?}"))?
            .label(format!("{} reads, stalest per ½ s", client.label()))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|err| anyhow!("{err:?}"))
}

/// The picture's time step: a read per client every 50 ms would be tens of
/// thousands of marks; the stalest read of each step is what matters.
const STEP: f64 = 0.5;

/// The stalest read of `client` served in each [`STEP`], in order (steps
/// with no read served left out).
fn stalest_per_step(
    reads: &[crate::readers::Read],
    client: Client,
    highest: f64,
) -> Vec<(f64, f64)> {
    let mut steps: std::collections::BTreeMap<u64, f64> = std::collections::BTreeMap::new();
    for read in reads.iter().filter(|read| read.client == client) {
        if let Ok(served) = &read.outcome {
            let step = (read.at.as_secs_f64() / STEP) as u64;
            let stale = served.staleness.as_secs_f64().min(highest);
            let stalest = steps.entry(step).or_insert(0.0);
            *stalest = stalest.max(stale);
        }
    }
    (steps.into_iter())
        .map(|(step, stale)| (step as f64 * STEP, stale))
        .collect()
}

fn share<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    configuration: Configuration,
    run: &Run,
    length: f64,
) -> Result<()> {
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{}: replica1's share of reads (%)", configuration.label()),
            ("sans-serif", 15),
        )
        .margin(6)
        .x_label_area_size(34)
        .y_label_area_size(36)
        .build_cartesian_2d(0.0..length, 0.0..100.0)
        .map_err(|err| anyhow!("{err:?}"))?;
    chart
        .configure_mesh()
        .x_desc("s into the run")
        .light_line_style(WHITE)
        .draw()
        .map_err(|err| anyhow!("{err:?}"))?;
    for (client, color) in [(Client::Short, SHORT), (Client::Pooled, POOLED)] {
        let shares = lagging_share(run, configuration, client);
        chart
            .draw_series(LineSeries::new(
                shares
                    .iter()
                    .map(|(second, share)| (*second as f64, share * 100.0)),
                color.stroke_width(2),
            ))
            .map_err(|err| anyhow!("{err:?}"))?
            .label(format!("{} connections", client.label()))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|err| anyhow!("{err:?}"))
}
