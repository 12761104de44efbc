//! The man pages in `docs/man/` (`pagewire.1` and one per subcommand,
//! `pagewire-serve.1` …) are made by clap_mangen from the same clap
//! definitions as `--help` and the completions ([`super::cli::command`]).
//! The test below makes them again and fails when a committed page
//! differs, so they cannot drift from the flags; the Debian package
//! ships them. After changing a flag or its help:
//!
//! ```sh
//! PAGEWIRE_BLESS=1 cargo test --lib man_pages
//! ```

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The command line without the values of environment variables (the
    /// environment that makes the pages is no business of theirs).
    fn without_env_values(cmd: clap::Command) -> clap::Command {
        let names: Vec<String> = cmd
            .get_subcommands()
            .map(|s| s.get_name().to_owned())
            .collect();
        let mut cmd = cmd.mut_args(|arg| arg.hide_env_values(true));
        for name in names {
            cmd = cmd.mut_subcommand(name, without_env_values);
        }
        cmd
    }

    #[test]
    fn man_pages_match_the_flags() {
        let made = tempfile::tempdir().expect("tempdir");
        let cmd = without_env_values(super::super::cli::command());
        clap_mangen::generate_to(cmd, made.path()).expect("man pages");
        let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/man");
        let bless = std::env::var_os("PAGEWIRE_BLESS").is_some();
        let mut names: Vec<String> = std::fs::read_dir(made.path())
            .expect("read")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert!(names.contains(&"pagewire-serve.1".to_owned()), "{names:?}");
        let mut stale = Vec::new();
        for name in &names {
            let page = std::fs::read(made.path().join(name)).expect("page");
            let path = committed.join(name);
            if bless {
                std::fs::create_dir_all(&committed).expect("docs/man");
                std::fs::write(&path, &page).expect("write");
            } else if std::fs::read(&path).ok().as_deref() != Some(page.as_slice()) {
                stale.push(name.clone());
            }
        }
        let extra: Vec<String> = std::fs::read_dir(&committed)
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !names.contains(n))
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            stale.is_empty() && extra.is_empty(),
            "docs/man/ is out of date with the flags (differs: {stale:?}, no longer made: \
             {extra:?}); run PAGEWIRE_BLESS=1 cargo test --lib man_pages"
        );
    }
}
