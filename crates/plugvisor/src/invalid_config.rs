//! The one error a configuration builder returns.

/// A setting that cannot work, found when the configuration is built, so that
/// a bad value is an error at start-up and never a panic later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {problem}")]
#[non_exhaustive]
pub struct InvalidConfig {
    /// The setting's name, as the `plugvisor` command spells its flag
    /// (`health-interval`) and its config file key.
    pub setting: &'static str,
    /// What is wrong and what would work.
    pub problem: String,
}

impl InvalidConfig {
    pub(crate) fn new(setting: &'static str, problem: impl Into<String>) -> InvalidConfig {
        InvalidConfig {
            setting,
            problem: problem.into(),
        }
    }
}

/// Refuses a zero duration.
pub(crate) fn positive(
    setting: &'static str,
    value: std::time::Duration,
) -> Result<(), InvalidConfig> {
    match value.is_zero() {
        true => Err(InvalidConfig::new(setting, "must be more than 0")),
        false => Ok(()),
    }
}
