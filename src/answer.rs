//! What HAProxy is told, worked out once per snapshot and pool: what is
//! reported (up, drain, down or maint), the weight, the reason, and the
//! agent line they render to. The agent writes [`Answer::line`], `/health`
//! maps [`Answer::reported`] to a status code, `/status` and `/metrics` show
//! the fields. Nobody formats an answer again or parses one back: what kind
//! of reason it gives is [`Answer::cause`], typed.

use crate::maintenance::{Maintenance, Mode};
use crate::policy::{State, Verdict};
use crate::reason::Reason;

/// Longest agent line, newline included. HAProxy keeps 128 characters of a
/// description; a whole line that fits is never cut mid-word by HAProxy.
pub const MAX_LINE: usize = 128;

crate::labelled! {
    /// What the agent reports to HAProxy.
    pub enum Reported {
        Up => "up",
        Drain => "drain",
        Down => "down",
        /// Only an operator's switch says this: never a measured outcome.
        Maint => "maint",
    }
}

impl Reported {
    fn of(state: State) -> Reported {
        match state {
            State::Up(_) => Reported::Up,
            State::Drain => Reported::Drain,
            State::Down => Reported::Down,
        }
    }

    fn of_mode(mode: Mode) -> Reported {
        match mode {
            Mode::Drain => Reported::Drain,
            Mode::Maint => Reported::Maint,
        }
    }
}

/// One answer to HAProxy, rendered once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub reported: Reported,
    /// Percent of the configured weight new connections get: 0 unless up.
    pub weight: u8,
    /// Why, as the line says it (ASCII, possibly cut); empty for nothing to say.
    pub reason: String,
    /// Why, as data: what the transition log and `/events` compare.
    pub cause: Reason,
    line: String,
}

impl Answer {
    /// What a measured verdict tells HAProxy.
    pub fn of(verdict: &Verdict) -> Answer {
        Answer::new(
            Reported::of(verdict.state),
            verdict.state.weight(),
            verdict.reason.clone(),
        )
    }

    /// What an operator's maintenance switch tells HAProxy.
    pub fn maintenance(maintenance: &Maintenance) -> Answer {
        let cause = Reason::Maintenance(maintenance.text());
        Answer::new(Reported::of_mode(maintenance.mode), 0, cause)
    }

    /// This answer given to a request that matched no pool, saying why
    /// after its own reason (`; ` between).
    pub fn unmatched(&self, why: String) -> Answer {
        let cause = Reason::Unmatched {
            then: Box::new(self.cause.clone()),
            why,
        };
        Answer::new(self.reported, self.weight, cause)
    }

    /// Whether `new` is worth an event and a log line after `self`: another
    /// state or weight, or a down whose kind of reason changed. Lag figures
    /// and recovery counts changing are not news.
    pub fn is_news(&self, new: &Answer) -> bool {
        (self.reported, self.weight) != (new.reported, new.weight)
            || (new.reported == Reported::Down && !self.cause.same_kind(&new.cause))
    }

    /// The agent reply, newline included: the full state every time,
    /// because HAProxy resets nothing implicitly (`up` does not clear a
    /// drain, `ready` does not restore a 0% weight). ASCII, one line, at
    /// most [`MAX_LINE`] bytes.
    pub fn line(&self) -> &str {
        &self.line
    }

    /// The agent reply without its newline, as logs and `/status` show it.
    pub fn text(&self) -> &str {
        self.line.trim_end_matches('\n')
    }

    fn new(reported: Reported, weight: u8, cause: Reason) -> Answer {
        let reason = cause.to_string();
        let mut line = match reported {
            Reported::Up => format!("up ready {weight}%"),
            Reported::Drain => "up drain".to_owned(),
            Reported::Down => "down".to_owned(),
            Reported::Maint => "up maint".to_owned(),
        };
        let head = line.len();
        if !reason.is_empty() {
            line.push_str(" #");
            line.extend(reason.chars().map(|c| match c {
                ' ' | '!'..='~' => c,
                c if c.is_whitespace() => ' ',
                _ => '?',
            }));
        }
        line.truncate(MAX_LINE - 1);
        let reason = line.get(head + 2..).unwrap_or("").to_owned();
        line.push('\n');
        Answer {
            reported,
            weight: if reported == Reported::Up { weight } else { 0 },
            reason,
            cause,
            line,
        }
    }
}

impl Verdict {
    /// The agent line this verdict alone would send.
    pub fn agent_line(&self) -> String {
        Answer::of(self).line().to_owned()
    }
}

/// A verdict in logs reads as its agent line.
impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(Answer::of(self).text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Broken;
    use crate::maintenance::Source;
    use crate::reason::tests::lag;

    #[test]
    fn every_state_renders_its_own_line() {
        let stopped = Reason::Broken(Broken::LagUnknown {
            channel: String::new(),
            why: Some("io thread stopped".into()),
        });
        let cases = [
            (
                State::Up(100),
                Reason::None,
                Reported::Up,
                100,
                "up ready 100%\n",
            ),
            (
                State::Up(40),
                lag(3.0),
                Reported::Up,
                40,
                "up ready 40% #lag 3.0s\n",
            ),
            (
                State::Drain,
                lag(75.0),
                Reported::Drain,
                0,
                "up drain #lag 75.0s\n",
            ),
            (
                State::Down,
                stopped,
                Reported::Down,
                0,
                "down #lag unknown: io thread stopped\n",
            ),
        ];
        for (state, reason, reported, weight, line) in cases {
            let answer = Answer::of(&Verdict::new(state, reason.clone()));
            assert_eq!(
                (answer.reported, answer.weight, answer.line()),
                (reported, weight, line)
            );
            assert_eq!(answer.reason, reason.to_string());
            assert_eq!(answer.cause, reason);
            assert_eq!(answer.text(), line.trim_end());
        }
    }

    #[test]
    fn maintenance_reports_its_mode_at_no_weight() {
        let maint = Answer::maintenance(&Maintenance::parse("maint kernel", Source::Http));
        assert_eq!(
            (maint.reported, maint.weight, maint.line()),
            (Reported::Maint, 0, "up maint #maintenance: kernel\n")
        );
        let drain = Answer::maintenance(&Maintenance::parse("", Source::Http));
        assert_eq!(drain.line(), "up drain #maintenance\n");
        assert_eq!(drain.reason, "maintenance");
    }

    #[test]
    fn the_reason_shown_is_the_reason_sent() {
        let long = Answer::of(&Verdict::new(
            State::Down,
            Reason::Unreachable {
                kind: crate::probe::ErrorKind::Unreachable,
                phrase: format!("caf\u{e9}\nnext line {}", "x".repeat(300)),
            },
        ));
        assert!(long.line().len() <= MAX_LINE, "{}", long.line().len());
        assert!(long.line().is_ascii());
        assert_eq!(long.line().matches('\n').count(), 1);
        assert_eq!(long.text(), format!("down #{}", long.reason));
        assert!(long.reason.starts_with("caf? next line xxx"));
    }

    #[test]
    fn an_unmatched_request_keeps_the_state_and_says_why() {
        let up = Answer::of(&Verdict::new(State::Up(60), lag(2.0)));
        assert_eq!(
            up.unmatched("unknown pool x".into()).line(),
            "up ready 60% #lag 2.0s; unknown pool x\n"
        );
        let full = Answer::of(&Verdict::healthy());
        assert_eq!(
            full.unmatched("unknown pool x".into()).line(),
            "up ready 100% #unknown pool x\n"
        );
    }

    #[test]
    fn news_is_a_new_state_or_weight_or_a_new_kind_of_down() {
        let answer = |state, reason| Answer::of(&Verdict::new(state, reason));
        let sql = |errno| {
            Reason::Broken(Broken::SqlThreadError {
                errno,
                channel: String::new(),
            })
        };
        let down = answer(State::Down, sql(1062));
        assert!(!down.is_news(&answer(State::Down, sql(1146))));
        assert!(down.is_news(&answer(State::Down, lag(400.0))));
        let up = answer(State::Up(50), lag(16.0));
        assert!(!up.is_news(&answer(State::Up(50), lag(16.4))));
        assert!(up.is_news(&answer(State::Up(49), lag(17.0))));
        let drain = answer(State::Drain, lag(70.0));
        assert!(!drain.is_news(&answer(State::Drain, sql(1062))));
    }
}
