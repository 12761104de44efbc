//! Options of the command language (`--wait`, `--timeout 2s`, ...): one
//! table of what each option is and how its value is read, and the
//! durations they take.
//!
//! A command lists the options it takes in its [`super::CommandDef`]. An
//! option is recognised only where the command allows options (before its
//! first argument, and after arguments that are names or targets, never
//! inside free text) and only when it is one of the command's own: every
//! other word is an argument as it always was, so a line that meant
//! something before options existed still means the same.

use std::time::Duration;

/// What the options of one command line asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// `--dry-run`: say what the command would reach, do nothing.
    pub dry_run: bool,
    /// `--wait`: return once every target page confirmed it applied it.
    pub wait: bool,
    /// `--timeout DURATION`: how long to wait for the pages.
    pub timeout: Option<Duration>,
    /// `--count N`: how many pages to wait for.
    pub count: Option<usize>,
}

/// One option: its word, the placeholder of its value (if it takes one),
/// what it does, and how it sets [`Options`].
#[derive(Debug)]
pub struct OptionDef {
    /// The word, e.g. `--timeout`.
    pub name: &'static str,
    /// Its value's placeholder (`DURATION`), or `None` for a switch.
    pub(crate) value: Option<&'static str>,
    /// One line for `help`.
    pub(crate) help: &'static str,
    /// Records the option (and its value, empty for a switch); the error
    /// says what is wrong with the value.
    pub(crate) set: fn(&mut Options, &str) -> Result<(), String>,
}

/// Options are told apart by their word (a function pointer cannot be
/// compared meaningfully).
impl PartialEq for OptionDef {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for OptionDef {}

/// The longest wait a command may ask for: a pending call holds its state
/// (and an HTTP request or CLI process) this long at most.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// How long commands wait for pages when no `--timeout` is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most pages `ws wait --count` may wait for.
pub(crate) const MAX_COUNT: usize = 1_000_000;

/// `--dry-run`.
pub(crate) static DRY_RUN: OptionDef = OptionDef {
    name: "--dry-run",
    value: None,
    help: "print the pages it would reach and do nothing",
    set: |o, _| {
        o.dry_run = true;
        Ok(())
    },
};

/// `--wait`.
pub(crate) static WAIT: OptionDef = OptionDef {
    name: "--wait",
    value: None,
    help: "return once every target page confirmed it (exit 1 at the timeout)",
    set: |o, _| {
        o.wait = true;
        Ok(())
    },
};

/// `--timeout DURATION`.
pub(crate) static TIMEOUT: OptionDef = OptionDef {
    name: "--timeout",
    value: Some("DURATION"),
    help: "how long to wait, e.g. 500ms, 5s or 2m (default 5s, at most 1h)",
    set: |o, value| {
        let d = parse_duration(value)?;
        if d.is_zero() || d > MAX_TIMEOUT {
            return Err(format!(
                "'{value}' is out of range; it must be from 1ms to 1h"
            ));
        }
        o.timeout = Some(d);
        Ok(())
    },
};

/// `--count N`.
pub(crate) static COUNT: OptionDef = OptionDef {
    name: "--count",
    value: Some("N"),
    help: "how many pages must hold NAME (default 1)",
    set: |o, value| match value.parse::<usize>() {
        Ok(n) if (1..=MAX_COUNT).contains(&n) => {
            o.count = Some(n);
            Ok(())
        }
        _ => Err(format!(
            "'{}' is not a count; expected a whole number from 1 to {MAX_COUNT}",
            crate::base::text::shown(value, 20)
        )),
    },
};

/// Reads a duration as people write it: a number and a unit, `ms`, `s`,
/// `m` or `h` (`500ms`, `5s`, `1.5s`, `2m`, `1h`). A bare number is
/// refused: seconds or milliseconds would be a guess.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "'{}' is not a duration; expected a number and a unit, e.g. 500ms, 5s, 2m or 1h",
            crate::base::text::shown(text, 20)
        )
    };
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    // Digits with at most one dot, and a digit somewhere: `.5s` and `5.s`
    // are fine, `.s` and `1.2.3s` are not.
    if number.matches('.').count() > 1 || !number.contains(|c: char| c.is_ascii_digit()) {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    Duration::try_from_secs_f64(value * scale).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("500ms", 500),
            ("5s", 5000),
            ("1.5s", 1500),
            (".5s", 500),
            ("2m", 120_000),
            ("1h", 3_600_000),
            ("0s", 0),
            ("90s", 90_000),
        ];
        for (text, ms) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
        for bad in [
            "", "5", "s", ".s", "5 s", "5sec", "1.2.3s", "-1s", "5S", "1e3s", "5m30s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_duration("5x"),
            Err(
                "'5x' is not a duration; expected a number and a unit, e.g. 500ms, 5s, 2m or 1h"
                    .to_string()
            )
        );
    }

    #[test]
    fn timeouts_are_bounded() {
        let mut o = Options::default();
        assert!((TIMEOUT.set)(&mut o, "0s").is_err());
        assert!((TIMEOUT.set)(&mut o, "2h").is_err());
        assert_eq!((TIMEOUT.set)(&mut o, "1h"), Ok(()));
        assert_eq!(o.timeout, Some(MAX_TIMEOUT));
        assert!((COUNT.set)(&mut o, "0").is_err());
        assert!((COUNT.set)(&mut o, "x").is_err());
        assert_eq!((COUNT.set)(&mut o, "3"), Ok(()));
        assert_eq!(o.count, Some(3));
    }
}
