//! A plugin's settings, as its manifest's `settings_schema.settings` lists
//! them in Mattermost's schema: each with a key, a type and a default. Pure:
//! it parses the schema and checks values against it.

use serde::Deserialize;
use serde_json::{Map, Value};

/// The setting types of Mattermost's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SettingType {
    /// One line of text.
    Text,
    /// Several lines of text.
    Longtext,
    /// A number (integer or decimal).
    Number,
    /// `true` or `false`.
    Bool,
    /// One of `options`, as a list.
    Dropdown,
    /// One of `options`, as radio buttons.
    Radio,
    /// A user name (text).
    Username,
    /// A value the host generates (text).
    Generated,
    /// Any JSON value, shown by the plugin's own UI.
    Custom,
}

/// One choice of a dropdown or radio setting.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[non_exhaustive]
pub struct SettingOption {
    /// What the operator sees.
    #[serde(default)]
    pub display_name: String,
    /// What the plugin gets.
    pub value: String,
}

/// One setting of a plugin.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[non_exhaustive]
pub struct Setting {
    /// The configuration key.
    pub key: String,
    /// Its type, which values are checked against.
    #[serde(rename = "type")]
    pub kind: SettingType,
    /// The label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Help for the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help_text: Option<String>,
    /// Shown in an empty field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<String>,
    /// The value when the operator sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// The choices of a dropdown or radio setting.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<SettingOption>,
    /// Shown masked (a password, a token).
    #[serde(default)]
    pub secret: bool,
}

/// A plugin's settings.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct SettingsSchema {
    /// In the manifest's order.
    pub settings: Vec<Setting>,
}

/// A value that does not fit its setting, or a key the plugin has no setting for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("setting {key:?}: {problem}")]
#[non_exhaustive]
pub struct InvalidSetting {
    /// The configuration key.
    pub key: String,
    /// What is wrong and what would fit.
    pub problem: String,
}

impl SettingsSchema {
    /// Parses `settings_schema` as a manifest carries it (`None`: no settings).
    /// The error names the field at fault.
    pub(crate) fn parse(schema: Option<&Value>) -> Result<SettingsSchema, String> {
        let Some(schema) = schema else {
            return Ok(SettingsSchema::default());
        };
        let Some(settings) = schema.get("settings") else {
            return Ok(SettingsSchema::default());
        };
        let settings: Vec<Setting> = serde_json::from_value(settings.clone())
            .map_err(|e| format!("field `settings_schema.settings`: {e}"))?;
        let parsed = SettingsSchema { settings };
        for (i, setting) in parsed.settings.iter().enumerate() {
            let field = format!("settings_schema.settings[{i}]");
            if setting.key.is_empty() {
                return Err(format!("field `{field}.key` is empty"));
            }
            if parsed.settings[..i].iter().any(|s| s.key == setting.key) {
                return Err(format!(
                    "field `{field}.key`: {:?} appears twice",
                    setting.key
                ));
            }
            if matches!(setting.kind, SettingType::Dropdown | SettingType::Radio)
                && setting.options.is_empty()
            {
                return Err(format!(
                    "field `{field}.options`: a {:?} setting needs options",
                    setting.kind
                ));
            }
            if let Some(default) = &setting.default {
                setting
                    .coerce(default)
                    .map_err(|e| format!("field `{field}.default`: {}", e.problem))?;
            }
        }
        Ok(parsed)
    }

    /// The setting with this key.
    pub fn setting(&self, key: &str) -> Option<&Setting> {
        self.settings.iter().find(|s| s.key == key)
    }

    /// Every setting's default (settings without one are left out).
    pub fn defaults(&self) -> Map<String, Value> {
        self.settings
            .iter()
            .filter_map(|s| {
                let default = s.default.as_ref()?;
                Some((s.key.clone(), s.coerce(default).ok()?))
            })
            .collect()
    }

    /// Checks `value` for `key`, and turns the text forms an operator types
    /// (`"true"`, `"42"`) into the setting's type. A plugin without a schema
    /// takes any key and value.
    pub fn check(&self, key: &str, value: &Value) -> Result<Value, InvalidSetting> {
        if self.settings.is_empty() {
            return Ok(value.clone());
        }
        match self.setting(key) {
            Some(setting) => setting.coerce(value),
            None => Err(InvalidSetting {
                key: key.to_string(),
                problem: format!(
                    "the plugin has no such setting; its settings are {}",
                    self.settings
                        .iter()
                        .map(|s| s.key.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }
}

impl Setting {
    /// `value` in this setting's type, or why it does not fit.
    pub fn coerce(&self, value: &Value) -> Result<Value, InvalidSetting> {
        let invalid = |problem: String| InvalidSetting {
            key: self.key.clone(),
            problem,
        };
        match self.kind {
            SettingType::Bool => match value {
                Value::Bool(_) => Ok(value.clone()),
                Value::String(s) if s == "true" || s == "false" => Ok(Value::Bool(s == "true")),
                other => Err(invalid(format!("expected true or false, not {other}"))),
            },
            SettingType::Number => match value {
                Value::Number(_) => Ok(value.clone()),
                Value::String(s) => serde_json::from_str::<serde_json::Number>(s.trim())
                    .map(Value::Number)
                    .map_err(|_| invalid(format!("expected a number, not {s:?}"))),
                other => Err(invalid(format!("expected a number, not {other}"))),
            },
            SettingType::Dropdown | SettingType::Radio => {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                match self.options.iter().any(|o| o.value == text) {
                    true => Ok(Value::String(text)),
                    false => Err(invalid(format!(
                        "{text:?} is not one of {}",
                        self.options
                            .iter()
                            .map(|o| format!("{:?}", o.value))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))),
                }
            }
            SettingType::Custom => Ok(value.clone()),
            SettingType::Text
            | SettingType::Longtext
            | SettingType::Username
            | SettingType::Generated => match value {
                Value::String(_) => Ok(value.clone()),
                other => Err(invalid(format!("expected text, not {other}"))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> SettingsSchema {
        SettingsSchema::parse(Some(&json!({"settings": [
            {"key": "greeting", "type": "text", "default": "Hello", "display_name": "Greeting"},
            {"key": "shout", "type": "bool", "default": false},
            {"key": "repeat", "type": "number", "default": 1},
            {"key": "colour", "type": "dropdown", "default": "red",
             "options": [{"display_name": "Red", "value": "red"}, {"display_name": "Blue", "value": "blue"}]}
        ]})))
        .unwrap()
    }

    #[test]
    fn defaults_come_from_the_schema() {
        let defaults = schema().defaults();
        assert_eq!(defaults["greeting"], "Hello");
        assert_eq!(defaults["shout"], false);
        assert_eq!(defaults["repeat"], 1);
        assert_eq!(defaults["colour"], "red");
    }

    #[test]
    fn typed_text_is_turned_into_the_settings_type() {
        let schema = schema();
        assert_eq!(schema.check("shout", &json!("true")).unwrap(), json!(true));
        assert_eq!(schema.check("repeat", &json!("3")).unwrap(), json!(3));
        assert_eq!(schema.check("repeat", &json!("2.5")).unwrap(), json!(2.5));
        assert_eq!(
            schema.check("colour", &json!("blue")).unwrap(),
            json!("blue")
        );
        assert_eq!(schema.check("greeting", &json!("Hi")).unwrap(), json!("Hi"));
    }

    #[test]
    fn bad_values_name_the_key_and_what_fits() {
        let schema = schema();
        let error = schema.check("shout", &json!("yes")).unwrap_err();
        assert_eq!(error.key, "shout");
        assert!(
            error.to_string().contains("expected true or false"),
            "{error}"
        );
        let error = schema.check("colour", &json!("green")).unwrap_err();
        assert!(error.to_string().contains("\"red\", \"blue\""), "{error}");
        let error = schema.check("volume", &json!("11")).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("greeting, shout, repeat, colour"),
            "{error}"
        );
        assert!(schema.check("repeat", &json!("many")).is_err());
        assert!(schema.check("greeting", &json!(5)).is_err());
    }

    #[test]
    fn a_plugin_without_a_schema_takes_anything() {
        let schema = SettingsSchema::parse(None).unwrap();
        assert_eq!(schema.check("any", &json!("thing")).unwrap(), "thing");
        assert!(schema.defaults().is_empty());
    }

    #[test]
    fn a_bad_schema_names_the_field() {
        let bad_type =
            SettingsSchema::parse(Some(&json!({"settings": [{"key": "a", "type": "colour"}]})));
        assert!(bad_type.unwrap_err().contains("settings_schema.settings"));
        let bad_default = SettingsSchema::parse(Some(
            &json!({"settings": [{"key": "a", "type": "bool", "default": "maybe"}]}),
        ));
        assert!(
            bad_default
                .unwrap_err()
                .contains("settings_schema.settings[0].default")
        );
        let twice = SettingsSchema::parse(Some(&json!({"settings": [
            {"key": "a", "type": "text"}, {"key": "a", "type": "text"}]})));
        assert!(twice.unwrap_err().contains("appears twice"));
        let no_options =
            SettingsSchema::parse(Some(&json!({"settings": [{"key": "a", "type": "radio"}]})));
        assert!(no_options.unwrap_err().contains("needs options"));
    }
}
