//! Everything from the environment, read once at start-up, with errors that say which variable
//! is wrong. Missing proof-of-origin configuration is a start-up error, never a pass-through.

use std::sync::Arc;

use crate::event::Provider;
use crate::notify::Routing;
use crate::providers::ProviderSettings;
use crate::providers::foloosi_api::{self, FoloosiApi};
use crate::verify::{self, SecretError, SecretLists, Verifier};

pub use crate::verify::{MIN_KEY_BYTES, MIN_TOKEN_LEN};

/// Bodies larger than this are refused with 413 (`BODY_LIMIT_BYTES`).
pub const DEFAULT_BODY_LIMIT: usize = 256 * 1024;

/// The largest `BODY_LIMIT_BYTES`: a held delivery keeps the whole body, its headers (at most
/// [`crate::held::MAX_HEADER_BYTES`]) and a few small attributes in one DynamoDB item of at most
/// 400 KB.
pub const MAX_BODY_LIMIT: usize = 384 * 1024;

/// Reads one variable; tests pass a map, the binaries `std::env::var`.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, with empty values read as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{provider}: set {vars} (refusing to start without a way to verify its webhooks)")]
    MissingSecret { provider: Provider, vars: String },
    #[error("{var}: {message}")]
    Invalid { var: String, message: String },
}

fn invalid(var: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { var: var.into(), message: message.into() }
}

impl From<SecretError> for ConfigError {
    fn from(e: SecretError) -> Self {
        invalid(e.var, e.message)
    }
}

/// Development secrets for the local runner only, printed at its start so anyone can sign with
/// them: every provider's, in [`Provider::ALL`] order. The Lambda functions never fall back to
/// these.
pub fn dev_secrets() -> impl Iterator<Item = (&'static str, &'static str)> {
    Provider::ALL.into_iter().flat_map(|p| p.descriptor().secrets.iter().filter_map(|s| Some((s.var, s.dev?))))
}

/// The development secret of `var`, if it has one.
pub fn dev_secret(var: &str) -> Option<&'static str> {
    dev_secrets().find(|(k, _)| *k == var).map(|(_, v)| v)
}

/// The environment variables that hold each provider's proof of origin.
pub fn secret_vars(provider: Provider) -> Vec<&'static str> {
    provider.descriptor().secrets.iter().map(|s| s.var).collect()
}

/// Builds the provider's verifier from its secrets, or `None` when none is configured.
fn verifier(provider: Provider, env: Env, tolerance: u64) -> Result<Option<Arc<dyn Verifier>>, ConfigError> {
    Ok((provider.descriptor().verifier)(&SecretLists::new(env, tolerance))?)
}

/// Whether a missing secret stops start-up or falls back to [`dev_secrets`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    /// The Lambda functions: a secret is required and none may be a development secret, which
    /// anyone can read in this repository (unless `ALLOW_DEVELOPMENT_SECRETS=true`, for local
    /// Lambda emulation only).
    Production,
    /// Required, development secrets allowed (tests, tools that sign).
    Required,
    /// The local runner: fall back to the development secrets, and say so.
    DevFallback,
}

/// `ALLOW_DEVELOPMENT_SECRETS`: lets a Lambda function start on the published development
/// secrets, for `cargo lambda watch` and the emulator. Never set in `template.yaml`.
pub const ALLOW_DEV_SECRETS: &str = "ALLOW_DEVELOPMENT_SECRETS";

/// The first of `provider`'s variables that holds a development secret.
fn dev_secret_in_use(provider: Provider, env: Env) -> Option<&'static str> {
    provider.descriptor().secrets.iter().find_map(|s| {
        let (value, dev) = (env(s.var)?, s.dev?);
        let dev = secret_bytes(dev);
        verify::split_secrets(&value).iter().any(|v| secret_bytes(v) == dev).then_some(s.var)
    })
}

/// A secret as the verifier uses it: a `whsec_` key decoded (the same key without its padding,
/// or in base64's URL alphabet, is the same key), any other secret its text.
fn secret_bytes(secret: &str) -> Vec<u8> {
    use base64::Engine;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let lenient = GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let secret = secret.trim();
    let decoded = secret.strip_prefix("whsec_").and_then(|b64| {
        [&base64::alphabet::STANDARD, &base64::alphabet::URL_SAFE]
            .into_iter()
            .find_map(|alphabet| GeneralPurpose::new(alphabet, lenient).decode(b64).ok())
    });
    decoded.unwrap_or_else(|| secret.as_bytes().to_vec())
}

#[derive(Clone)]
pub struct Config {
    pub verifiers: Vec<(Provider, Arc<dyn Verifier>)>,
    pub settings: ProviderSettings,
    /// Confirms each Foloosi delivery when `FOLOOSI_SECRET_KEY` is set.
    pub foloosi_api: Option<FoloosiApi>,
    pub body_limit: usize,
    pub tolerance_secs: u64,
    pub routing: Routing,
    /// The platform's name in merchant-facing texts.
    pub platform: String,
    /// Providers running on development secrets (local runner only).
    pub dev_secrets: Vec<Provider>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("providers", &self.verifiers.iter().map(|(p, _)| *p).collect::<Vec<_>>())
            .field("settings", &self.settings)
            .field("body_limit", &self.body_limit)
            .field("tolerance_secs", &self.tolerance_secs)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// The configuration of one provider's Lambda function: its secret is required.
    pub fn for_function(provider: Provider) -> Result<Self, ConfigError> {
        Self::load(&[provider], Secrets::Required, &process_env)
    }

    pub fn load(providers: &[Provider], secrets: Secrets, env: Env) -> Result<Self, ConfigError> {
        let number = |var: &'static str, default: u64| -> Result<u64, ConfigError> {
            env(var).map_or(Ok(default), |v| v.trim().parse().map_err(|_| invalid(var, "must be a whole number")))
        };
        let tolerance_secs = number("REPLAY_TOLERANCE_SECONDS", verify::DEFAULT_TOLERANCE_SECS)?;
        let body_limit = usize::try_from(number("BODY_LIMIT_BYTES", DEFAULT_BODY_LIMIT as u64)?)
            .ok()
            .filter(|l| *l <= MAX_BODY_LIMIT)
            .ok_or_else(|| {
                invalid("BODY_LIMIT_BYTES", format!("at most {MAX_BODY_LIMIT}, so that a held delivery fits one item"))
            })?;
        let foloosi_api = match env("FOLOOSI_SECRET_KEY") {
            Some(key) => {
                let base = env("FOLOOSI_API_URL").unwrap_or_else(|| foloosi_api::DEFAULT_BASE_URL.into());
                Some(
                    FoloosiApi::new(&base, &key)
                        .map_err(|e| invalid("FOLOOSI_SECRET_KEY", format!("no TLS roots: {e}")))?,
                )
            }
            None => None,
        };
        let settings = ProviderSettings::load(env).map_err(|(var, e)| invalid(var, e))?;
        let mut routing = Routing::default();
        if let Some(spec) = env("ROUTING") {
            routing = routing.with_overrides(None, &spec).map_err(|e| invalid("ROUTING", e.to_string()))?;
        }
        if let Some(list) = env(TOKEN_PAYORS) {
            let providers = list
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| p.parse::<Provider>().map_err(|e| invalid(TOKEN_PAYORS, e.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            routing = routing.with_token_payors(providers);
        }
        for provider in Provider::ALL {
            let var = routing_var(provider);
            if let Some(spec) = env(&var) {
                routing = routing.with_overrides(Some(provider), &spec).map_err(|e| invalid(&*var, e.to_string()))?;
            }
        }

        let mut verifiers = Vec::new();
        let mut dev_secrets = Vec::new();
        let allow_dev = env(ALLOW_DEV_SECRETS).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        for &provider in providers {
            if secrets == Secrets::Production
                && !allow_dev
                && let Some(var) = dev_secret_in_use(provider, env)
            {
                return Err(invalid(
                    var,
                    format!(
                        "is a development secret, published in this repository (set {ALLOW_DEV_SECRETS}=true only to emulate Lambda locally)"
                    ),
                ));
            }
            let scheme = match (verifier(provider, env, tolerance_secs)?, secrets) {
                (Some(v), _) => v,
                (None, Secrets::Required | Secrets::Production) => {
                    return Err(ConfigError::MissingSecret { provider, vars: join_vars(provider) });
                }
                (None, Secrets::DevFallback) => {
                    dev_secrets.push(provider);
                    let dev = |var: &str| dev_secret(var).map(str::to_owned);
                    verifier(provider, &dev, tolerance_secs)?
                        .ok_or(ConfigError::MissingSecret { provider, vars: join_vars(provider) })?
                }
            };
            verifiers.push((provider, scheme));
        }
        Ok(Config {
            verifiers,
            settings,
            foloosi_api,
            body_limit,
            tolerance_secs,
            routing,
            platform: env("PLATFORM_NAME").unwrap_or_else(|| "Our payments team".into()),
            dev_secrets,
        })
    }

    /// The verifier of `provider`, for signing with the same secrets (CLI, events, tests).
    pub fn verifier(&self, provider: Provider) -> Option<&Arc<dyn Verifier>> {
        self.verifiers.iter().find(|(p, _)| *p == provider).map(|(_, v)| v)
    }
}

/// `TOKEN_PAYORS`: the providers (comma-separated) whose events proved only by a token may reach
/// payors. None by default.
pub const TOKEN_PAYORS: &str = "TOKEN_PAYORS";

/// `ROUTING_<PROVIDER>`: one provider's routing overrides, applied after `ROUTING`.
pub fn routing_var(provider: Provider) -> String {
    format!("ROUTING_{}", provider.as_str().to_ascii_uppercase())
}

/// What the missing-secret error asks for: any one of the provider's variables.
fn join_vars(provider: Provider) -> String {
    secret_vars(provider).join(" or ")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn functions_refuse_to_start_without_their_secret() {
        let env = env_of(&[]);
        for p in Provider::ALL {
            let e = Config::load(&[p], Secrets::Required, &env).unwrap_err();
            assert!(matches!(e, ConfigError::MissingSecret { provider, .. } if provider == p), "{e}");
        }
    }

    #[test]
    fn dev_fallback_covers_every_provider_and_says_so() {
        let env = env_of(&[("MEMBERFUL_WEBHOOK_SECRET", "a-real-memberful-secret")]);
        let c = Config::load(&Provider::ALL, Secrets::DevFallback, &env).unwrap();
        assert_eq!(c.verifiers.len(), Provider::ALL.len());
        assert!(!c.dev_secrets.contains(&Provider::Memberful));
        assert_eq!(c.dev_secrets.len(), Provider::ALL.len() - 1);
    }

    #[test]
    fn bad_values_name_their_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("RAINFOREST_WEBHOOK_SECRET", "whsec_!!")], "RAINFOREST_WEBHOOK_SECRET"),
            (&[("WEBFORCE_WEBHOOK_TOKEN", "short")], "WEBFORCE_WEBHOOK_TOKEN"),
            (&[("CONSCENT_BASIC_AUTH", "nocolon")], "CONSCENT_BASIC_AUTH"),
            (&[("REPLAY_TOLERANCE_SECONDS", "five")], "REPLAY_TOLERANCE_SECONDS"),
            (&[("MEMBERFUL_CURRENCY", "DOLLARS")], "MEMBERFUL_CURRENCY"),
            (&[("WEBFORCE_CURRENCY", "usd!")], "WEBFORCE_CURRENCY"),
            (&[("ROUTING", "created=all")], "ROUTING"),
            (&[("ROUTING_RAINFOREST", "created=all")], "ROUTING_RAINFOREST"),
            (&[("MEMBERFUL_WEBHOOK_SECRET", "short")], "MEMBERFUL_WEBHOOK_SECRET"),
            (&[("CONSCENT_WEBHOOK_SECRET", "fifteen-bytes!!")], "CONSCENT_WEBHOOK_SECRET"),
            (&[("RAINFOREST_WEBHOOK_SECRET", "whsec_")], "RAINFOREST_WEBHOOK_SECRET"),
            (&[("RAINFOREST_WEBHOOK_SECRET", "whsec_c2hvcnQ=")], "RAINFOREST_WEBHOOK_SECRET"),
            (&[("CONSCENT_BASIC_AUTH", ":secret")], "CONSCENT_BASIC_AUTH"),
            (&[("CONSCENT_BASIC_AUTH", "key:")], "CONSCENT_BASIC_AUTH"),
            (&[("CONSCENT_BASIC_AUTH", "key:fifteen-chars")], "CONSCENT_BASIC_AUTH"),
            // 23 bytes: under the Standard Webhooks spec's 24.
            (&[("RAINFOREST_WEBHOOK_SECRET", "whsec_dHdlbnR5LXRocmVlLWJ5dGVzLWxvbmc=")], "RAINFOREST_WEBHOOK_SECRET"),
            (&[("BODY_LIMIT_BYTES", "10000000")], "BODY_LIMIT_BYTES"),
        ];
        for (pairs, var) in cases {
            let e = Config::load(&Provider::ALL, Secrets::DevFallback, &env_of(pairs)).unwrap_err();
            assert!(matches!(&e, ConfigError::Invalid { var: v, .. } if v == var), "{e}");
        }
    }

    /// A Lambda function never starts on a secret published in this repository.
    #[test]
    fn functions_refuse_the_development_secrets() {
        for (var, value) in dev_secrets() {
            let provider = Provider::ALL.into_iter().find(|p| secret_vars(*p).contains(&var)).unwrap();
            let env = env_of(&[(var, value)]);
            let e = Config::load(&[provider], Secrets::Production, &env).unwrap_err();
            assert!(matches!(&e, ConfigError::Invalid { var: v, .. } if v == var), "{e}");
            // Rotation lists are checked entry by entry.
            let listed = format!("a-real-secret-of-enough-length,{value}");
            let env = env_of(&[(var, &listed)]);
            assert!(Config::load(&[provider], Secrets::Production, &env).is_err(), "{var} in a list");
            let env = env_of(&[(var, value), (ALLOW_DEV_SECRETS, "true")]);
            assert!(Config::load(&[provider], Secrets::Production, &env).is_ok(), "{var} allowed for emulation");
        }
    }

    /// Basic credentials beside the signature's secret are a downgrade: refused at start-up
    /// unless both are asked for.
    #[test]
    fn conscent_refuses_basic_beside_the_signature_unless_asked() {
        let both = [
            ("CONSCENT_WEBHOOK_SECRET", "a-conscent-secret-of-enough-length"),
            ("CONSCENT_BASIC_AUTH", "key:a-secret-of-enough-length"),
        ];
        let e = Config::load(&[Provider::Conscent], Secrets::Required, &env_of(&both)).unwrap_err();
        assert!(matches!(&e, ConfigError::Invalid { var, .. } if var == "CONSCENT_BASIC_AUTH"), "{e}");
        let asked = [both[0], both[1], ("CONSCENT_ACCEPT_BASIC", "true")];
        assert!(Config::load(&[Provider::Conscent], Secrets::Required, &env_of(&asked)).is_ok());
    }

    /// The guard compares keys, not their text: the development key without its base64 padding
    /// is still the development key.
    #[test]
    fn the_development_key_is_refused_in_any_spelling() {
        let dev = dev_secret("RAINFOREST_WEBHOOK_SECRET").unwrap();
        let unpadded = dev.trim_end_matches('=');
        assert_ne!(unpadded, dev);
        let e = Config::load(
            &[Provider::Rainforest],
            Secrets::Production,
            &env_of(&[("RAINFOREST_WEBHOOK_SECRET", unpadded)]),
        );
        assert!(
            matches!(&e, Err(ConfigError::Invalid { var, message }) if var == "RAINFOREST_WEBHOOK_SECRET" && message.contains("development secret")),
            "{e:?}"
        );
    }

    #[test]
    fn conscent_accepts_basic_auth_alone() {
        let env = env_of(&[("CONSCENT_BASIC_AUTH", "key:a-secret-of-enough-length")]);
        assert!(Config::load(&[Provider::Conscent], Secrets::Required, &env).is_ok());
    }
}
