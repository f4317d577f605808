//! The configuration file layer. Precedence, highest first: command-line flag,
//! `PMCORE_*` environment variable, the file named by `--config` / `PMCORE_CONFIG`,
//! the default in code. The file is TOML whose keys are the environment variable
//! names without `PMCORE_`, in lower case:
//!
//! ```toml
//! database_url = "postgres://api:…@db:5432/pmcore"
//! kafka_brokers = "kafka-1:9092,kafka-2:9092"
//! log_format = "text"
//! ```

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use anyhow::Context;
use clap::Command;

/// The file named on the command line or in `PMCORE_CONFIG`, read before parsing so
/// that its values can become the defaults.
pub(crate) fn path_from(args: &[OsString]) -> Option<PathBuf> {
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        if arg == "--config" {
            return iter.next().map(PathBuf::from);
        }
        if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("PMCORE_CONFIG").map(PathBuf::from)
}

/// Makes every setting in the file the default of the argument that reads the
/// matching `PMCORE_*` variable. An unknown key is an error, so a typo cannot pass
/// silently.
pub(crate) fn apply(mut command: Command, path: &Path) -> anyhow::Result<Command> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read configuration file {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("configuration file {} is not valid TOML", path.display()))?;
    for (key, value) in table {
        let env = format!("PMCORE_{}", key.to_ascii_uppercase());
        let id = command
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == env.as_str()))
            .map(|a| a.get_id().clone())
            .with_context(|| {
                format!(
                    "{}: unknown setting `{key}` (see --help for the PMCORE_* names)",
                    path.display()
                )
            })?;
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => anyhow::bail!(
                "{}: `{key}` must be a string, a number or a boolean",
                path.display()
            ),
        };
        command = command.mut_arg(id, |arg| arg.default_value(value));
    }
    Ok(command)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Settings {
        #[arg(long, env = "PMCORE_TEST_CFG_BROKERS", default_value = "code")]
        brokers: String,
        #[arg(long, env = "PMCORE_TEST_CFG_PARTITIONS", default_value_t = 1)]
        partitions: i32,
    }

    fn file(text: &str) -> tempfile_path::TempFile {
        tempfile_path::TempFile::new(text)
    }

    fn parse(args: &[&str], config: &Path) -> anyhow::Result<Settings> {
        let command = apply(Settings::command(), config)?;
        let matches = command.try_get_matches_from(args)?;
        Ok(Settings::from_arg_matches(&matches)?)
    }

    #[test]
    fn the_file_overrides_code_defaults_and_flags_override_the_file() {
        let f = file("test_cfg_brokers = \"from-file\"\ntest_cfg_partitions = 6\n");
        let s = parse(&["svc"], f.path()).expect("parses");
        assert_eq!((s.brokers.as_str(), s.partitions), ("from-file", 6));
        let s = parse(&["svc", "--brokers", "from-flag"], f.path()).expect("parses");
        assert_eq!(s.brokers, "from-flag");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let f = file("test_cfg_brokerz = \"typo\"\n");
        let err = parse(&["svc"], f.path()).expect_err("unknown key");
        assert!(
            err.to_string()
                .contains("unknown setting `test_cfg_brokerz`"),
            "{err}"
        );
        let f = file("test_cfg_partitions = \"many\"\n");
        assert!(
            parse(&["svc"], f.path()).is_err(),
            "a non-number for a number"
        );
        let f = file("not toml at all [");
        assert!(parse(&["svc"], f.path()).is_err());
    }

    #[test]
    fn the_path_comes_from_the_command_line() {
        let args: Vec<OsString> = ["svc", "--config", "a.toml"]
            .iter()
            .map(Into::into)
            .collect();
        assert_eq!(path_from(&args), Some(PathBuf::from("a.toml")));
        let args: Vec<OsString> = ["svc", "--config=b.toml", "serve"]
            .iter()
            .map(Into::into)
            .collect();
        assert_eq!(path_from(&args), Some(PathBuf::from("b.toml")));
    }

    /// A file under the system temp folder, removed when dropped.
    mod tempfile_path {
        use std::path::{Path, PathBuf};

        pub(super) struct TempFile(PathBuf);

        impl TempFile {
            pub(super) fn new(text: &str) -> Self {
                let path = std::env::temp_dir().join(format!("pmcore-cfg-{}.toml", uuid_like()));
                std::fs::write(&path, text).expect("temp file written");
                Self(path)
            }

            pub(super) fn path(&self) -> &Path {
                &self.0
            }
        }

        impl Drop for TempFile {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }

        fn uuid_like() -> String {
            use std::sync::atomic::{AtomicU64, Ordering};
            static N: AtomicU64 = AtomicU64::new(0);
            format!(
                "{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            )
        }
    }
}
