//! Readiness (`GET /readyz`): a small set of named checks, each answered
//! by the part it is about. `serve` adds `listening` (the HTTP door
//! accepts, until shutdown begins) and, in a cluster, `cluster` (joined
//! through Redis now); a part that loads state at start adds its own. The
//! daemon is ready when every check passes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// One check: Ok when ready, else why not.
type Check = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The named checks; cheap to clone.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Arc<Mutex<Vec<(&'static str, Check)>>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Readiness")
    }
}

impl Readiness {
    /// Adds the check `name`, answered by `check` each time it is asked.
    pub(crate) fn add(
        &self,
        name: &'static str,
        check: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.lock().push((name, Box::new(check)));
    }

    /// Adds the check `name` as a switch, off until set: while off it
    /// fails saying `why_not`.
    pub(crate) fn switch(&self, name: &'static str, why_not: &'static str) -> Switch {
        let on = Arc::new(AtomicBool::new(false));
        let flag = on.clone();
        self.add(name, move || match flag.load(Ordering::Acquire) {
            true => Ok(()),
            false => Err(why_not.to_owned()),
        });
        Switch(on)
    }

    /// Whether every check passes, and one line per check
    /// (`NAME: ok` or `NAME: WHY NOT`).
    pub(crate) fn report(&self) -> (bool, String) {
        let checks = self.lock();
        let mut ready = true;
        let mut text = String::new();
        for (name, check) in checks.iter() {
            let line = match check() {
                Ok(()) => format!("{name}: ok\n"),
                Err(why) => {
                    ready = false;
                    format!("{name}: {why}\n")
                }
            };
            text.push_str(&line);
        }
        if checks.is_empty() {
            text.push_str("starting\n");
            ready = false;
        }
        (ready, text)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(&'static str, Check)>> {
        self.checks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A check that is on or off; see [`Readiness::switch`].
#[derive(Clone, Debug)]
pub(crate) struct Switch(Arc<AtomicBool>);

impl Switch {
    /// Turns the check on (passing) or off.
    pub(crate) fn set(&self, on: bool) {
        self.0.store(on, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_when_every_check_passes() {
        let r = Readiness::default();
        assert_eq!(r.report(), (false, "starting\n".to_owned()));
        let listening = r.switch("listening", "not accepting connections yet");
        r.add("cluster", || {
            Err("Redis at 127.0.0.1:1 is unreachable".into())
        });
        assert_eq!(
            r.report(),
            (
                false,
                "listening: not accepting connections yet\n\
                 cluster: Redis at 127.0.0.1:1 is unreachable\n"
                    .to_owned()
            )
        );
        listening.set(true);
        let r2 = Readiness::default();
        let on = r2.switch("listening", "no");
        on.set(true);
        assert_eq!(r2.report(), (true, "listening: ok\n".to_owned()));
        assert!(!r.report().0);
    }
}
