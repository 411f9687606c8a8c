//! Each plugin's configuration: its settings_schema's defaults, overlaid
//! with the values of the host's config file, overlaid with the operator's
//! values (`plugvisor config set`), which the store keeps across restarts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Shared;
use super::slot::Slot;
use crate::settings_schema::{InvalidSetting, SettingsSchema};

/// Where a configuration value comes from, lowest precedence first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ConfigSource {
    /// The setting's default in the plugin's settings_schema.
    Default,
    /// The host's configuration ([`crate::EnvironmentConfigBuilder::plugin_configuration`];
    /// a `[plugins.ID]` table in plugvisor.toml).
    ConfigFile,
    /// Set by the operator at run time ([`crate::Environment::set_configuration`];
    /// `plugvisor config set`), kept in the data directory.
    Operator,
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConfigSource::Default => "default",
            ConfigSource::ConfigFile => "config file",
            ConfigSource::Operator => "set",
        })
    }
}

/// One value of a plugin's effective configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConfigValue {
    /// The setting's key.
    pub key: String,
    /// Its value.
    pub value: Value,
    /// Where it comes from.
    pub source: ConfigSource,
}

/// One change the operator asks for.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ConfigChange {
    /// Sets a key. A string is turned into the setting's type (`"true"` for
    /// a bool, `"42"` for a number), as an operator types it.
    Set {
        /// The setting's key.
        key: String,
        /// Its new value.
        value: Value,
    },
    /// Forgets the operator's value: the config file's or the default applies again.
    Unset {
        /// The setting's key.
        key: String,
    },
}

impl ConfigChange {
    /// Sets `key` to `value`.
    pub fn set(key: impl Into<String>, value: impl Into<Value>) -> ConfigChange {
        ConfigChange::Set {
            key: key.into(),
            value: value.into(),
        }
    }

    /// Unsets `key`.
    pub fn unset(key: impl Into<String>) -> ConfigChange {
        ConfigChange::Unset { key: key.into() }
    }
}

/// What became of an accepted configuration change. In every case it is
/// stored and survives restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ConfigApplied {
    /// The running plugin accepted it (OnConfigurationChange).
    Live,
    /// The plugin is not running; it gets the change when it is activated.
    AtNextActivation,
    /// The running plugin has no OnConfigurationChange hook; the change takes
    /// effect when it is restarted.
    AtNextRestart,
}

/// The config file's values, checked against each plugin's schema.
pub(crate) type FileValues = BTreeMap<String, Map<String, Value>>;

/// Checks the config file's values against the schemas.
pub(crate) fn check_file_values(
    file: &FileValues,
    schema_of: impl Fn(&str) -> Option<SettingsSchema>,
) -> Result<FileValues, (String, InvalidSetting)> {
    let mut checked = FileValues::new();
    for (id, values) in file {
        let Some(schema) = schema_of(id) else {
            tracing::warn!(plugin = %id, "the configuration names plugin {id:?}, which is not in the plugins directory; its values are kept for when it is");
            checked.insert(id.clone(), values.clone());
            continue;
        };
        let mut plugin = Map::new();
        for (key, value) in values {
            let value = schema.check(key, value).map_err(|e| (id.clone(), e))?;
            plugin.insert(key.clone(), value);
        }
        checked.insert(id.clone(), plugin);
    }
    Ok(checked)
}

/// The effective configuration, with where each value comes from.
pub(crate) fn effective(slot: &Slot, shared: &Shared) -> Vec<ConfigValue> {
    effective_with(slot, shared, &shared.store.config_values(slot.id()).unwrap_or_else(|error| {
        tracing::error!(plugin = slot.id(), %error, "cannot read the operator's configuration values; using the others");
        Map::new()
    }))
}

/// The same, with the given operator values instead of the stored ones.
pub(crate) fn effective_with(
    slot: &Slot,
    shared: &Shared,
    operator: &Map<String, Value>,
) -> Vec<ConfigValue> {
    let schema = slot.settings();
    let mut values: BTreeMap<String, ConfigValue> = BTreeMap::new();
    let mut put = |key: &str, value: Value, source| {
        values.insert(
            key.to_string(),
            ConfigValue {
                key: key.to_string(),
                value,
                source,
            },
        );
    };
    for (key, value) in schema.defaults() {
        put(&key, value, ConfigSource::Default);
    }
    if let Some(file) = shared.config.plugin_configuration.get(slot.id()) {
        for (key, value) in file {
            put(key, value.clone(), ConfigSource::ConfigFile);
        }
    }
    for (key, value) in operator {
        // A value stored for an older version of the plugin may no longer fit.
        match schema.check(key, value) {
            Ok(value) => put(key, value, ConfigSource::Operator),
            Err(error) => {
                tracing::warn!(
                    plugin = slot.id(),
                    "ignoring a stored configuration value: {error}"
                )
            }
        }
    }
    values.into_values().collect()
}

/// The effective configuration as the JSON object hooks carry.
pub(crate) fn to_json(values: &[ConfigValue]) -> String {
    let object: Map<String, Value> = values
        .iter()
        .map(|v| (v.key.clone(), v.value.clone()))
        .collect();
    Value::Object(object).to_string()
}
