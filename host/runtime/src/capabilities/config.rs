//! `taskbox:task/config`: per-module settings the operator provides, some of them secret.
//!
//! Secret values reach the guest and nothing else: the host never puts them in an error or a
//! log line, and the job's log has them replaced by `[secret]` before it is stored.

use std::collections::BTreeMap;

use wasmtime::component::{HasSelf, Linker};

use crate::bindings::taskbox::task::config;
use crate::job::JobState;

/// One module's settings.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConfigValues {
    values: BTreeMap<String, Setting>,
}

#[derive(Clone, PartialEq, Eq)]
struct Setting {
    value: String,
    secret: bool,
}

impl ConfigValues {
    /// Settings from plain `values` and `secrets`; a key in both is secret.
    pub fn new(
        values: impl IntoIterator<Item = (String, String)>,
        secrets: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let mut all = BTreeMap::new();
        for (key, value) in values {
            all.insert(
                key,
                Setting {
                    value,
                    secret: false,
                },
            );
        }
        for (key, value) in secrets {
            all.insert(
                key,
                Setting {
                    value,
                    secret: true,
                },
            );
        }
        Self { values: all }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|setting| setting.value.as_str())
    }

    /// Whether there are no settings.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The secret values, longest first (so a secret containing another is hidden whole).
    pub(crate) fn secrets(&self) -> Vec<&str> {
        let mut secrets: Vec<&str> = self
            .values
            .values()
            .filter(|setting| setting.secret && !setting.value.is_empty())
            .map(|setting| setting.value.as_str())
            .collect();
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        secrets
    }
}

/// Shows keys and plain values; secret values never.
impl std::fmt::Debug for ConfigValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.values.iter().map(|(key, setting)| {
                let shown = match setting.secret {
                    true => "[secret]",
                    false => setting.value.as_str(),
                };
                (key, shown)
            }))
            .finish()
    }
}

/// Replaces every secret value in `text` with `[secret]`.
pub(crate) fn redact(text: String, config: &ConfigValues) -> String {
    config
        .secrets()
        .into_iter()
        .fold(text, |text, secret| text.replace(secret, "[secret]"))
}

/// The longest key a task may ask for, in bytes: longer keys are never found.
pub const MAX_KEY_LEN: usize = 256;

impl config::Host for JobState {
    fn get(&mut self, key: String) -> Option<String> {
        if key.len() > MAX_KEY_LEN {
            return None;
        }
        self.config.get(&key).map(str::to_owned)
    }
}

pub(crate) fn add_to_linker(linker: &mut Linker<JobState>) -> wasmtime::Result<()> {
    config::add_to_linker::<JobState, HasSelf<JobState>>(linker, |state| state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_hidden_from_debug_output_and_logs() {
        let config = ConfigValues::new(
            [("region".to_owned(), "eu".to_owned())],
            [
                ("token".to_owned(), "s3cr3t".to_owned()),
                ("long".to_owned(), "s3cr3t-and-more".to_owned()),
            ],
        );
        assert_eq!(config.get("token"), Some("s3cr3t"));
        let shown = format!("{config:?}");
        assert!(shown.contains("eu") && !shown.contains("s3cr3t"), "{shown}");
        assert_eq!(
            redact("sent s3cr3t-and-more then s3cr3t".into(), &config),
            "sent [secret] then [secret]"
        );
    }
}
