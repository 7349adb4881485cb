//! Loading and checking a service's settings: a TOML file with environment
//! overrides, and bounds checks whose errors name the setting.

use std::path::Path;

use serde::de::DeserializeOwned;

/// A setting that broke its rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidSetting {
    /// The setting, as spelled in the file.
    pub field: &'static str,
    /// What is wrong, including the bounds.
    pub problem: String,
}

impl InvalidSetting {
    /// A violation of `field`.
    pub fn new(field: &'static str, problem: impl Into<String>) -> Self {
        Self {
            field,
            problem: problem.into(),
        }
    }
}

/// Read `path` (TOML), then apply `<env_prefix>_<SETTING>` environment overrides
/// (nested settings separated by `__`).
pub fn load_layered<T: DeserializeOwned>(
    path: &Path,
    env_prefix: &str,
) -> Result<T, config::ConfigError> {
    config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Toml))
        .add_source(
            // The prefix separator must be set explicitly, or it becomes the
            // nesting separator too (rust-cli/config-rs#291).
            config::Environment::with_prefix(env_prefix)
                .prefix_separator("_")
                .separator("__"),
        )
        .build()?
        .try_deserialize()
}

/// `Ok` when `min <= value <= max`; otherwise an error naming the bounds.
pub fn within(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), InvalidSetting> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(InvalidSetting::new(
            field,
            format!("{value} is out of bounds: must be between {min} and {max}"),
        ))
    }
}
