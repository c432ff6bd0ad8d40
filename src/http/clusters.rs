//! The fleet page's drawing of each cluster: every member a box, coloured
//! by its place (the page's styles: `.writer`, `.follows_elsewhere`, …),
//! with an arrow from each replica to the server it follows; sources that
//! are no target in dashed boxes. Inline SVG laid out here: the servers
//! that follow nobody in the first column, each replica one column right
//! of its source.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::html::escape;
use crate::topology::{Cluster, Place, PlaceKind, Topology};

const BOX_W: f64 = 190.0;
const BOX_H: f64 = 30.0;
const COLUMN: f64 = 250.0;
const ROW: f64 = 42.0;
const MARGIN: f64 = 10.0;

/// Every cluster of more than one target: its name, its writer (or why
/// none), and its drawing; then what could not be linked. `place_of` is
/// each target's place as its last poll took it.
pub fn section(page: &mut String, topology: &Topology, place_of: impl Fn(&str) -> Option<Place>) {
    let drawn: Vec<&Cluster> = (topology.clusters.iter())
        .filter(|cluster| cluster.members.len() > 1)
        .collect();
    if drawn.is_empty() && topology.notes.is_empty() {
        return;
    }
    page.push_str("<h2>Clusters</h2>\n<div class=\"topology\" id=\"clusters\">\n");
    for cluster in drawn {
        let how = if cluster.named {
            "named in the configuration"
        } else {
            "found from replication links"
        };
        let writer = match (&cluster.writer, cluster.writable.is_empty()) {
            (Some(writer), _) => format!("writer <b>{}</b>", escape(writer)),
            (None, true) => "no server takes writes".to_owned(),
            (None, false) => format!(
                "<span class=\"error\">no writer: {} take writes</span>",
                escape(&cluster.writable.join(", "))
            ),
        };
        let _ = writeln!(
            page,
            "<h3 data-cluster=\"{}\">{} <small>({how}): {writer}</small></h3>",
            escape(&cluster.name),
            escape(&cluster.name),
        );
        draw(page, cluster, &place_of);
    }
    for note in &topology.notes {
        let _ = writeln!(page, "<p class=\"error\">{}</p>", escape(note));
    }
    page.push_str("</div>\n");
}

/// One cluster's drawing.
fn draw(page: &mut String, cluster: &Cluster, place_of: &impl Fn(&str) -> Option<Place>) {
    let sources: BTreeMap<&str, &str> = (cluster.follows.iter())
        .map(|(replica, source)| (replica.as_str(), source.as_str()))
        .collect();
    let outside: Vec<&str> = (sources.values())
        .copied()
        .filter(|source| !cluster.members.iter().any(|member| member == source))
        .collect();
    let mut column: BTreeMap<&str, usize> = BTreeMap::new();
    let boxes = cluster
        .members
        .iter()
        .map(String::as_str)
        .chain(outside.iter().copied());
    for name in boxes.clone() {
        column.insert(name, depth(name, &sources, cluster.members.len()));
    }
    let mut rows: BTreeMap<usize, usize> = BTreeMap::new();
    let mut at: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for name in boxes {
        let col = column[name];
        let row = rows.entry(col).or_default();
        at.insert(
            name,
            (MARGIN + col as f64 * COLUMN, MARGIN + *row as f64 * ROW),
        );
        *row += 1;
    }
    let columns = column.values().max().map_or(1, |deepest| deepest + 1);
    let tallest = rows.values().max().copied().unwrap_or(1);
    let width = 2.0 * MARGIN + (columns - 1) as f64 * COLUMN + BOX_W;
    let height = 2.0 * MARGIN + (tallest - 1) as f64 * ROW + BOX_H;
    let id = format!("arrow-{}", escape(&cluster.name));
    let _ = writeln!(
        page,
        "<svg width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" \
         role=\"img\" aria-label=\"who follows whom in {}\">\n\
         <defs><marker id=\"{id}\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" \
         markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" \
         fill=\"#555\"/></marker></defs>",
        escape(&cluster.name)
    );
    for (replica, source) in &cluster.follows {
        let (Some(from), Some(to)) = (at.get(replica.as_str()), at.get(source.as_str())) else {
            continue;
        };
        let _ = writeln!(
            page,
            "<line class=\"follows\" data-replica=\"{}\" data-source=\"{}\" x1=\"{:.0}\" y1=\"{:.0}\" \
             x2=\"{:.0}\" y2=\"{:.0}\" stroke=\"#555\" marker-end=\"url(#{id})\"/>",
            escape(replica),
            escape(source),
            from.0,
            from.1 + BOX_H / 2.0,
            to.0 + BOX_W,
            to.1 + BOX_H / 2.0,
        );
    }
    for (name, (x, y)) in &at {
        let member = cluster.members.iter().any(|member| member == name);
        let (class, title) = match (member, place_of(name)) {
            (false, _) => ("outside", "not a target".to_owned()),
            (true, Some(place)) => (place.kind().as_str(), place.to_string()),
            (true, None) => (PlaceKind::Aside.as_str(), "not placed".to_owned()),
        };
        let label: String = name.chars().take(26).collect();
        let _ = writeln!(
            page,
            "<g class=\"place {class}\" data-target=\"{}\" data-place=\"{class}\"><title>{}</title>\
             <rect x=\"{x:.0}\" y=\"{y:.0}\" width=\"{BOX_W}\" height=\"{BOX_H}\" rx=\"4\"/>\
             <text x=\"{:.0}\" y=\"{:.0}\">{}</text></g>",
            escape(name),
            escape(&title),
            x + 8.0,
            y + BOX_H / 2.0 + 4.0,
            escape(&label),
        );
    }
    page.push_str("</svg>\n");
}

/// How many sources up `name`'s chain goes (0: it follows nobody in the
/// drawing); at most `limit`, round a ring.
fn depth(name: &str, sources: &BTreeMap<&str, &str>, limit: usize) -> usize {
    let mut depth = 0;
    let mut at = name;
    while let Some(source) = sources.get(at) {
        if depth >= limit {
            break;
        }
        depth += 1;
        at = source;
    }
    depth
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_replica_is_drawn_one_column_right_of_its_source() {
        let sources = BTreeMap::from([("db-2", "db-1"), ("db-3", "db-2"), ("a", "b"), ("b", "a")]);
        assert_eq!(depth("db-1", &sources, 5), 0);
        assert_eq!(depth("db-2", &sources, 5), 1);
        assert_eq!(depth("db-3", &sources, 5), 2);
        assert_eq!(depth("a", &sources, 2), 2, "a ring stops at the limit");
    }
}
