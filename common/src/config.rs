//! Everything from the environment, read once at start-up, with errors that say which variable
//! is wrong. Missing proof-of-origin configuration is a start-up error, never a pass-through.

use std::sync::Arc;

use crate::event::Provider;
use crate::money;
use crate::notify::Routing;
use crate::providers::ProviderSettings;
use crate::providers::{conscent, memberful, webforce};
use crate::verify::{self, BasicAuth, FirstPresented, HmacSha256Hex, SharedToken, StandardWebhooks, Verifier};

/// Bodies larger than this are refused with 413 (`BODY_LIMIT_BYTES`).
pub const DEFAULT_BODY_LIMIT: usize = 256 * 1024;

/// Tokens for providers that sign nothing must be hard to guess.
pub const MIN_TOKEN_LEN: usize = 16;

/// Reads one variable; tests pass a map, the binaries `std::env::var`.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, with empty values read as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{provider}: set {vars} (refusing to start without a way to verify its webhooks)")]
    MissingSecret { provider: Provider, vars: &'static str },
    #[error("{var}: {message}")]
    Invalid { var: &'static str, message: String },
}

fn invalid(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { var, message: message.into() }
}

/// Development secrets for the local runner only, printed at its start so anyone can sign with
/// them. The Lambda functions never fall back to these.
pub const DEV_SECRETS: &[(&str, &str)] = &[
    ("MEMBERFUL_WEBHOOK_SECRET", "dev-memberful-secret-not-for-production"),
    ("CONSCENT_WEBHOOK_SECRET", "dev-conscent-secret-not-for-production"),
    // base64 of "dev-rainforest-signing-key-only!"
    ("RAINFOREST_WEBHOOK_SECRET", "whsec_ZGV2LXJhaW5mb3Jlc3Qtc2lnbmluZy1rZXktb25seSE="),
    ("WEBFORCE_WEBHOOK_TOKEN", "dev-webforce-token-not-for-production"),
    ("FOLOOSI_WEBHOOK_TOKEN", "dev-foloosi-token-not-for-production"),
];

/// The environment variables that hold each provider's proof of origin.
pub fn secret_vars(provider: Provider) -> &'static [&'static str] {
    match provider {
        Provider::Memberful => &["MEMBERFUL_WEBHOOK_SECRET"],
        Provider::Conscent => &["CONSCENT_WEBHOOK_SECRET", "CONSCENT_BASIC_AUTH"],
        Provider::Rainforest => &["RAINFOREST_WEBHOOK_SECRET"],
        Provider::Webforce => &["WEBFORCE_WEBHOOK_TOKEN"],
        Provider::Foloosi => &["FOLOOSI_WEBHOOK_TOKEN"],
    }
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Builds the provider's verifier from its secrets, or `None` when none is configured.
fn verifier(provider: Provider, env: Env, tolerance: u64) -> Result<Option<Arc<dyn Verifier>>, ConfigError> {
    let list =
        |var: &str| env(var).map(|v| verify::split_secrets(&v).into_iter().map(str::to_owned).collect::<Vec<_>>());
    let tokens = |var: &'static str| -> Result<Option<Vec<String>>, ConfigError> {
        match list(var) {
            Some(t) if t.iter().any(|t| t.len() < MIN_TOKEN_LEN) => {
                Err(invalid(var, format!("each token must be at least {MIN_TOKEN_LEN} characters")))
            }
            other => Ok(other.filter(|t| !t.is_empty())),
        }
    };
    let scheme: Option<Arc<dyn Verifier>> = match provider {
        Provider::Memberful => list("MEMBERFUL_WEBHOOK_SECRET")
            .filter(|s| !s.is_empty())
            .map(|s| Arc::new(HmacSha256Hex::new(memberful::SIGNATURE_HEADER, &refs(&s))) as Arc<dyn Verifier>),
        Provider::Conscent => {
            let mut schemes: Vec<Box<dyn Verifier>> = Vec::new();
            if let Some(s) = list("CONSCENT_WEBHOOK_SECRET").filter(|s| !s.is_empty()) {
                schemes.push(Box::new(HmacSha256Hex::new(conscent::SIGNATURE_HEADER, &refs(&s))));
            }
            if let Some(c) = list("CONSCENT_BASIC_AUTH").filter(|s| !s.is_empty()) {
                if c.iter().any(|p| !p.contains(':')) {
                    return Err(invalid("CONSCENT_BASIC_AUTH", "each entry must be key:secret"));
                }
                schemes.push(Box::new(BasicAuth::new(&refs(&c))));
            }
            (!schemes.is_empty()).then(|| {
                Arc::new(FirstPresented::new(schemes, "`x-conscent-signature` or `authorization`")) as Arc<dyn Verifier>
            })
        }
        Provider::Rainforest => match list("RAINFOREST_WEBHOOK_SECRET").filter(|s| !s.is_empty()) {
            Some(s) => Some(Arc::new(
                StandardWebhooks::new(&refs(&s), tolerance)
                    .map_err(|e| invalid("RAINFOREST_WEBHOOK_SECRET", e.to_string()))?,
            )),
            None => None,
        },
        Provider::Webforce => tokens("WEBFORCE_WEBHOOK_TOKEN")?.map(|t| {
            Arc::new(SharedToken::new(webforce::TOKEN_HEADER, webforce::TOKEN_QUERY, &refs(&t))) as Arc<dyn Verifier>
        }),
        Provider::Foloosi => tokens("FOLOOSI_WEBHOOK_TOKEN")?.map(|t| {
            Arc::new(SharedToken::new(
                crate::providers::foloosi::TOKEN_HEADER,
                crate::providers::foloosi::TOKEN_QUERY,
                &refs(&t),
            )) as Arc<dyn Verifier>
        }),
    };
    Ok(scheme)
}

/// Whether a missing secret stops start-up or falls back to [`DEV_SECRETS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    Required,
    /// The local runner: fall back to the development secrets, and say so.
    DevFallback,
}

#[derive(Clone)]
pub struct Config {
    pub verifiers: Vec<(Provider, Arc<dyn Verifier>)>,
    pub settings: ProviderSettings,
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
            .map_err(|_| invalid("BODY_LIMIT_BYTES", "too large"))?;
        let currency = |var: &'static str| -> Result<String, ConfigError> {
            let code = env(var).unwrap_or_else(|| "USD".into());
            money::currency(&code).map(|(c, _)| c).map_err(|e| invalid(var, e.to_string()))
        };
        let settings = ProviderSettings {
            memberful_currency: currency("MEMBERFUL_CURRENCY")?,
            memberful_account: env("MEMBERFUL_ACCOUNT"),
            webforce_currency: currency("WEBFORCE_CURRENCY")?,
            foloosi_merchant: env("FOLOOSI_MERCHANT_ID"),
        };
        let routing = match env("ROUTING") {
            Some(spec) => Routing::with_overrides(&spec).map_err(|e| invalid("ROUTING", e.to_string()))?,
            None => Routing::default(),
        };

        let mut verifiers = Vec::new();
        let mut dev_secrets = Vec::new();
        for &provider in providers {
            let scheme = match (verifier(provider, env, tolerance_secs)?, secrets) {
                (Some(v), _) => v,
                (None, Secrets::Required) => {
                    return Err(ConfigError::MissingSecret { provider, vars: join_vars(provider) });
                }
                (None, Secrets::DevFallback) => {
                    dev_secrets.push(provider);
                    let dev = |var: &str| DEV_SECRETS.iter().find(|(k, _)| *k == var).map(|(_, v)| (*v).to_owned());
                    verifier(provider, &dev, tolerance_secs)?
                        .ok_or(ConfigError::MissingSecret { provider, vars: join_vars(provider) })?
                }
            };
            verifiers.push((provider, scheme));
        }
        Ok(Config {
            verifiers,
            settings,
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

fn join_vars(provider: Provider) -> &'static str {
    match provider {
        Provider::Conscent => "CONSCENT_WEBHOOK_SECRET or CONSCENT_BASIC_AUTH",
        p => secret_vars(p)[0],
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
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
        let env = env_of(&[("MEMBERFUL_WEBHOOK_SECRET", "real")]);
        let c = Config::load(&Provider::ALL, Secrets::DevFallback, &env).unwrap();
        assert_eq!(c.verifiers.len(), 5);
        assert!(!c.dev_secrets.contains(&Provider::Memberful));
        assert_eq!(c.dev_secrets.len(), 4);
    }

    #[test]
    fn bad_values_name_their_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("RAINFOREST_WEBHOOK_SECRET", "whsec_!!")], "RAINFOREST_WEBHOOK_SECRET"),
            (&[("WEBFORCE_WEBHOOK_TOKEN", "short")], "WEBFORCE_WEBHOOK_TOKEN"),
            (&[("CONSCENT_BASIC_AUTH", "nocolon")], "CONSCENT_BASIC_AUTH"),
            (&[("REPLAY_TOLERANCE_SECONDS", "five")], "REPLAY_TOLERANCE_SECONDS"),
            (&[("MEMBERFUL_CURRENCY", "DOLLARS")], "MEMBERFUL_CURRENCY"),
            (&[("ROUTING", "created=all")], "ROUTING"),
        ];
        for (pairs, var) in cases {
            let e = Config::load(&Provider::ALL, Secrets::DevFallback, &env_of(pairs)).unwrap_err();
            assert!(matches!(&e, ConfigError::Invalid { var: v, .. } if v == var), "{e}");
        }
    }

    #[test]
    fn conscent_accepts_basic_auth_alone() {
        let env = env_of(&[("CONSCENT_BASIC_AUTH", "key:secret")]);
        assert!(Config::load(&[Provider::Conscent], Secrets::Required, &env).is_ok());
    }
}
