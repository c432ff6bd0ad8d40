//! Properties over generated input: the configuration loader, the agent's
//! request parser, the lag curve, the agent line and the flap damper.

use std::time::Duration;

use proptest::prelude::*;
use remora::agent::{MAX_REQUEST, parse_pool};
use remora::answer::MAX_LINE;
use remora::config::{Config, Percent, Policy, Thresholds};
use remora::policy::{Damper, State, Verdict, state_for_lag};
use remora::probe::ErrorKind;
use remora::reason::Reason;
use remora::snapshot::Asked;
use serde_yaml::Value;

/// What HAProxy makes of an agent reply, by its grammar
/// (`../shared/reference/haproxy-agent.md`): one line ended by `\n`; words
/// separated by spaces, tabs or commas, case-insensitive; `N%` (an integer),
/// `ready|drain|maint`, `up|down|fail|stopped`, `maxconn:N`; a word starting
/// with `#` starts the description, which runs to the end of the line.
#[derive(Debug, Default, PartialEq)]
struct Reply {
    operational: Option<String>,
    admin: Option<String>,
    weight: Option<u32>,
    description: Option<String>,
}

fn parse_reply(line: &str) -> Result<Reply, String> {
    let body = line.strip_suffix('\n').ok_or("not ended by a newline")?;
    if body.contains(['\n', '\r']) {
        return Err("more than one line".into());
    }
    if !line.is_ascii() {
        return Err("not ASCII".into());
    }
    if line.len() > MAX_LINE {
        return Err(format!("{} bytes, HAProxy keeps {MAX_LINE}", line.len()));
    }
    let mut reply = Reply::default();
    let mut rest = body;
    while !rest.is_empty() {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            break;
        }
        if let Some(description) = rest.strip_prefix('#') {
            reply.description = Some(description.to_owned());
            break;
        }
        let end = rest.find([' ', '\t', ',']).unwrap_or(rest.len());
        let word = rest[..end].to_ascii_lowercase();
        rest = &rest[end..];
        match word.as_str() {
            "up" | "down" | "fail" | "stopped" => reply.operational = Some(word),
            "ready" | "drain" | "maint" => reply.admin = Some(word),
            _ => {
                if let Some(number) = word.strip_suffix('%') {
                    let weight: u32 = number
                        .parse()
                        .map_err(|_| format!("weight {word:?} is not an integer"))?;
                    reply.weight = Some(weight);
                } else if let Some(number) = word.strip_prefix("maxconn:") {
                    number.parse::<u32>().map_err(|_| format!("bad {word:?}"))?;
                } else {
                    return Err(format!("unknown word {word:?}"));
                }
            }
        }
    }
    Ok(reply)
}

fn state() -> impl Strategy<Value = State> {
    prop_oneof![
        (1u8..=100).prop_map(State::Up),
        Just(State::Drain),
        Just(State::Down),
    ]
}

/// Policies with ordered thresholds (what validation accepts).
fn policy() -> impl Strategy<Value = Policy> {
    (prop::array::uniform4(0u64..600_000), 1u32..=100, 1u32..=10).prop_map(
        |(mut thresholds, min_weight, recover_after)| {
            thresholds.sort_unstable();
            let [full_weight_below, min_weight_at, drain_at, down_at] =
                thresholds.map(Duration::from_millis);
            Policy {
                thresholds: Thresholds {
                    full_weight_below,
                    min_weight_at,
                    drain_at,
                    down_at,
                },
                min_weight: Percent(min_weight),
                recover_after,
                ..Policy::default()
            }
        },
    )
}

/// Every leaf of a YAML document, as (dotted path, path segments).
fn leaves(value: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match value {
        Value::Mapping(mapping) => {
            for (key, child) in mapping {
                path.push(key.as_str().expect("string keys").to_owned());
                leaves(child, path, out);
                path.pop();
            }
        }
        _ => out.push(path.clone()),
    }
}

fn set_leaf(document: &mut Value, path: &[String], to: Value) {
    let mut at = document;
    for key in path {
        at = at.get_mut(key.as_str()).expect("path exists");
    }
    *at = to;
}

fn every_key_example() -> (Value, Vec<Vec<String>>) {
    let text = include_str!("../examples/remora-all.yaml");
    let document: Value = serde_yaml::from_str(text).expect("the example parses");
    let mut out = Vec::new();
    leaves(&document, &mut Vec::new(), &mut out);
    (document, out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_loader_never_panics_on_any_text(text in any::<String>()) {
        let _ = Config::from_yaml(&text);
    }

    #[test]
    fn the_loader_never_panics_on_yaml_shaped_text(
        text in "([a-z_]{1,12}:( [a-z0-9_.%:{}\\[\\], -]{0,16})?\n( {2}[a-z_]{1,12}: [a-z0-9_.%:{}\\[\\], -]{0,16}\n){0,3}){0,6}"
    ) {
        let _ = Config::from_yaml(&text);
    }

    /// A value of the wrong shape under any key of the full example is an
    /// error that names that key, with its line.
    #[test]
    fn a_malformed_value_is_an_error_naming_its_key(
        pick in any::<prop::sample::Index>(),
        shape in 0..3usize,
        word in "[a-z]{1,8}",
    ) {
        let (mut document, keys) = every_key_example();
        let path = pick.get(&keys);
        let bad = match shape {
            0 => serde_yaml::from_str::<Value>(&format!("{{{word}: 1}}")).expect("yaml"),
            1 => serde_yaml::from_str::<Value>(&format!("[[{word}], {{a: 1}}]")).expect("yaml"),
            _ => serde_yaml::from_str::<Value>(&format!("{{{word}: [1, 2]}}")).expect("yaml"),
        };
        set_leaf(&mut document, path, bad);
        let text = serde_yaml::to_string(&document).expect("serializes");
        let err = Config::from_yaml(&text).expect_err("a mapping or list where a value belongs");
        let message = err.to_string();
        let dotted = path.join(".");
        prop_assert!(message.contains(&dotted), "{dotted}: {message}");
        prop_assert!(message.contains("line"), "{dotted}: {message}");
    }

    /// Whatever bytes arrive, the pool name read from them is short, trimmed,
    /// printable and part of what was sent; bytes that are not text are
    /// garbled, never a name and never "no name".
    #[test]
    fn the_agent_request_parser_takes_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let line = &bytes[..bytes.len().min(MAX_REQUEST)];
        let asked = parse_pool(line);
        if std::str::from_utf8(line).is_err() {
            prop_assert_eq!(asked, Asked::Garbled);
        }
        if let Asked::Pool(name) = asked {
            prop_assert!(!name.is_empty());
            prop_assert_eq!(name, name.trim());
            prop_assert!(!name.contains(char::is_control));
            prop_assert!(name.len() <= MAX_REQUEST);
            let text = String::from_utf8_lossy(line);
            prop_assert!(text.contains(name));
        }
    }

    /// Every verdict, whatever its reason holds, is exactly one line that
    /// HAProxy reads back as the same state and weight.
    #[test]
    fn every_verdict_renders_to_one_line_haproxy_accepts(state in state(), reason in "(.|\n|\r|#|,){0,300}") {
        // Text from outside (a server's or an operator's) reaches a reason
        // through a poll error's phrase.
        let said = Reason::Unreachable { kind: ErrorKind::DriverError, phrase: reason.clone() };
        let line = Verdict::new(state, said).agent_line();
        let reply = parse_reply(&line).map_err(|why| TestCaseError::fail(format!("{line:?}: {why}")))?;
        match state {
            State::Up(weight) => {
                prop_assert_eq!(reply.operational.as_deref(), Some("up"));
                prop_assert_eq!(reply.admin.as_deref(), Some("ready"));
                prop_assert_eq!(reply.weight, Some(u32::from(weight)));
            }
            State::Drain => {
                prop_assert_eq!(reply.operational.as_deref(), Some("up"));
                prop_assert_eq!(reply.admin.as_deref(), Some("drain"));
            }
            State::Down => prop_assert_eq!(reply.operational.as_deref(), Some("down")),
        }
        prop_assert_eq!(reply.description.is_some(), !reason.is_empty());
    }

    /// More lag never means more weight (or a better state).
    #[test]
    fn weight_never_increases_when_lag_increases(
        policy in policy(),
        a in 0u64..900_000,
        b in 0u64..900_000,
    ) {
        let (less, more) = (a.min(b), a.max(b));
        let at_less = state_for_lag(Duration::from_millis(less), &policy);
        let at_more = state_for_lag(Duration::from_millis(more), &policy);
        prop_assert!(at_more <= at_less, "{at_more:?} at {more} ms, {at_less:?} at {less} ms");
    }

    /// The damper never publishes better than any of the last `recover_after`
    /// targets; so once the verdict gets worse it cannot get better for a
    /// whole window, and it flips back up at most once per window.
    #[test]
    fn damping_flips_back_up_at_most_once_per_recover_after_window(
        recover_after in 1u32..8,
        targets in prop::collection::vec(state(), 1..120),
    ) {
        let window = recover_after as usize;
        let mut damper = Damper::default();
        let mut published: Vec<State> = Vec::new();
        for (poll, target) in targets.iter().enumerate() {
            let decision = damper.apply(Verdict::new(*target, Reason::None), recover_after);
            let state = decision.verdict.state;
            let recent = &targets[poll.saturating_sub(window - 1)..=poll];
            prop_assert!(recent.iter().all(|t| state <= *t), "poll {poll}: {state:?} above one of {recent:?}");
            prop_assert_eq!(Some(state), recent.iter().min().copied());
            published.push(state);
        }
        let mut last_worsening: Option<usize> = None;
        let mut last_recovery: Option<usize> = None;
        for poll in 1..published.len() {
            if published[poll] < published[poll - 1] {
                last_worsening = Some(poll);
            } else if published[poll] > published[poll - 1]
                && let Some(worse_at) = last_worsening
            {
                prop_assert!(poll - worse_at >= window, "better at {poll}, worse at {worse_at}");
                // A recovery after a worsening: the next one is a window away.
                if let Some(before) = last_recovery {
                    prop_assert!(poll - before >= window, "recovered at {before} and {poll}");
                }
                last_recovery = Some(poll);
                last_worsening = None;
            }
        }
    }
}

#[test]
fn the_grammar_parser_rejects_what_haproxy_rejects() {
    for bad in [
        "up ready 40.5%\n",
        "up ready 40%",
        "up\nready\n",
        "up ready weight:40\n",
        "failed\n",
        "up ready 40% #caf\u{e9}\n",
    ] {
        assert!(parse_reply(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        parse_reply("up ready 40% #lag 16.0s\n"),
        Ok(Reply {
            operational: Some("up".into()),
            admin: Some("ready".into()),
            weight: Some(40),
            description: Some("lag 16.0s".into()),
        })
    );
}
