//! Secrets that rotate without a redeploy. A provider's secret variable may instead name a secret
//! in a store (`<VAR>_ARN`: Secrets Manager in the Lambda functions). It is read at start-up, read
//! again once it is older than its TTL, and read again when a delivery fails verification with
//! what was read, since the provider may have switched to the new secret first. A rotation lists
//! both while it lasts (`old,new`, as every secret variable may), so neither side waits.
//!
//! A store that cannot answer never costs a delivery: the secrets read before stay in use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::config::{ConfigError, Env};
use crate::verify::{Presented, Verified, Verifier, VerifyError};

/// How long a secret read from the store is used before it is read again (`SECRETS_TTL_SECONDS`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// The shortest time between two reads that a failed verification causes: a flood of unsigned
/// requests must not become one store call each.
pub const MIN_REREAD_INTERVAL: Duration = Duration::from_secs(10);

/// The variable that names `var`'s secret in the store.
pub fn arn_var(var: &str) -> String {
    format!("{var}_ARN")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// Where named secrets are read from.
#[async_trait]
pub trait SecretSource: Send + Sync {
    /// The secret's current text.
    async fn read(&self, id: &str) -> Result<String, SourceError>;
}

/// Which of `vars` name a secret in the store, with the name. Both a value and a name for the
/// same variable is refused: which one is meant cannot be guessed.
pub fn named(vars: &[&'static str], env: Env) -> Result<Vec<(&'static str, String)>, ConfigError> {
    let mut named = Vec::new();
    for &var in vars {
        let Some(id) = env(&arn_var(var)) else { continue };
        if env(var).is_some() {
            return Err(ConfigError::Invalid {
                var: var.into(),
                message: format!("set either {var} or {var}_ARN, not both"),
            });
        }
        named.push((var, id.trim().to_owned()));
    }
    Ok(named)
}

/// `SECRETS_TTL_SECONDS`, or [`DEFAULT_TTL`].
pub fn ttl(env: Env) -> Result<Duration, ConfigError> {
    match env("SECRETS_TTL_SECONDS") {
        None => Ok(DEFAULT_TTL),
        Some(v) => v.trim().parse().map(Duration::from_secs).map_err(|_| ConfigError::Invalid {
            var: "SECRETS_TTL_SECONDS".into(),
            message: "must be a whole number of seconds".into(),
        }),
    }
}

/// Reads every named secret, at start-up: one that cannot be read stops the start, naming it.
pub async fn read_all(
    source: &dyn SecretSource,
    named: &[(&'static str, String)],
) -> Result<HashMap<&'static str, String>, ConfigError> {
    let mut values = HashMap::with_capacity(named.len());
    for (var, id) in named {
        let value = source.read(id).await.map_err(|e| ConfigError::Invalid {
            var: (*var).into(),
            message: format!("could not read the secret {var}_ARN names: {e}"),
        })?;
        values.insert(*var, value);
    }
    Ok(values)
}

/// Builds a provider's verifier from its secret variables' values.
pub type BuildVerifier = Box<dyn Fn(Env) -> Result<Arc<dyn Verifier>, ConfigError> + Send + Sync>;

/// What a verifier needs to be rebuilt from secrets read again.
pub struct Rotation {
    source: Arc<dyn SecretSource>,
    named: Vec<(&'static str, String)>,
    build: BuildVerifier,
    ttl: Duration,
    /// The values the verifier in use was built from.
    values: Mutex<HashMap<&'static str, String>>,
    read_at: Mutex<Instant>,
    /// Held while reading: a delivery that finds a read under way uses what is cached.
    reading: tokio::sync::Mutex<()>,
}

impl Rotation {
    /// `values` were read just now from `source` for `named`; `build` makes a verifier of them.
    pub fn new(
        source: Arc<dyn SecretSource>,
        named: Vec<(&'static str, String)>,
        values: HashMap<&'static str, String>,
        build: BuildVerifier,
        ttl: Duration,
    ) -> Self {
        Rotation {
            source,
            named,
            build,
            ttl,
            values: Mutex::new(values),
            read_at: Mutex::new(Instant::now()),
            reading: tokio::sync::Mutex::new(()),
        }
    }

    fn older_than(&self, age: Duration) -> bool {
        self.read_at.lock().unwrap_or_else(PoisonError::into_inner).elapsed() >= age
    }

    /// Reads every named secret again; a verifier when they changed and make a valid one.
    async fn reread(&self) -> Option<Arc<dyn Verifier>> {
        let _reading = self.reading.try_lock().ok()?;
        // Stamped before the read: a store that fails is not asked again at once.
        *self.read_at.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        let mut values = HashMap::with_capacity(self.named.len());
        for (var, id) in &self.named {
            match self.source.read(id).await {
                Ok(value) => values.insert(*var, value),
                Err(e) => {
                    tracing::warn!(var = *var, error = %e, "could not read a secret again; the one read before stays in use");
                    return None;
                }
            };
        }
        if *self.values.lock().unwrap_or_else(PoisonError::into_inner) == values {
            return None;
        }
        match (self.build)(&|var: &str| values.get(var).cloned()) {
            Ok(verifier) => {
                tracing::info!(vars = ?values.keys().collect::<Vec<_>>(), "secrets changed in the store; now in use");
                *self.values.lock().unwrap_or_else(PoisonError::into_inner) = values;
                Some(verifier)
            }
            Err(e) => {
                tracing::error!(error = %e, "a secret read again is not valid; the one read before stays in use");
                None
            }
        }
    }
}

/// A provider's verifier, and how to rebuild it when its secrets live in a store.
pub struct ProviderVerifier {
    current: RwLock<Arc<dyn Verifier>>,
    rotation: Option<Rotation>,
}

impl std::fmt::Debug for ProviderVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderVerifier")
            .field("current", &self.current())
            .field("rotates", &self.rotation.is_some())
            .finish()
    }
}

impl ProviderVerifier {
    /// Secrets from the environment: fixed for the life of the process.
    pub fn fixed(verifier: Arc<dyn Verifier>) -> Self {
        ProviderVerifier { current: RwLock::new(verifier), rotation: None }
    }

    pub fn rotating(verifier: Arc<dyn Verifier>, rotation: Rotation) -> Self {
        ProviderVerifier { current: RwLock::new(verifier), rotation: Some(rotation) }
    }

    pub fn current(&self) -> Arc<dyn Verifier> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn replace(&self, verifier: Arc<dyn Verifier>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = verifier;
    }

    /// Verifies with the secrets in use, read again first when they are older than the TTL, and
    /// again after a mismatch (at most every [`MIN_REREAD_INTERVAL`]).
    pub async fn verify(&self, req: &Presented<'_>, now: i64) -> Result<Verified, VerifyError> {
        let Some(rotation) = &self.rotation else { return self.current().verify(req, now) };
        if rotation.older_than(rotation.ttl)
            && let Some(v) = rotation.reread().await
        {
            self.replace(v);
        }
        match self.current().verify(req, now) {
            Err(e @ (VerifyError::NoMatch | VerifyError::WrongCredentials))
                if rotation.older_than(MIN_REREAD_INTERVAL) =>
            {
                match rotation.reread().await {
                    Some(v) => {
                        self.replace(v);
                        self.current().verify(req, now)
                    }
                    None => Err(e),
                }
            }
            verified => verified,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::HeaderMap;

    use super::*;
    use crate::verify::SharedToken;

    /// A store in memory, counting reads; `None` is a store that cannot answer.
    #[derive(Default)]
    struct Store {
        value: Mutex<Option<String>>,
        reads: AtomicUsize,
    }

    #[async_trait]
    impl SecretSource for Store {
        async fn read(&self, _id: &str) -> Result<String, SourceError> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.value.lock().unwrap().clone().ok_or_else(|| SourceError("unavailable".into()))
        }
    }

    fn token(env: Env) -> Result<Arc<dyn Verifier>, ConfigError> {
        let value = env("TOKEN").unwrap_or_default();
        if value.len() < 16 {
            return Err(ConfigError::Invalid { var: "TOKEN".into(), message: "too short".into() });
        }
        Ok(Arc::new(SharedToken::new("x-token", Some("token"), &crate::verify::split_secrets(&value))))
    }

    fn rotating(store: &Arc<Store>, ttl: Duration) -> ProviderVerifier {
        let value = store.value.lock().unwrap().clone().unwrap();
        let values = HashMap::from([("TOKEN", value.clone())]);
        let verifier = token(&|_| Some(value.clone())).unwrap();
        let rotation = Rotation::new(store.clone(), vec![("TOKEN", "arn".into())], values, Box::new(token), ttl);
        ProviderVerifier::rotating(verifier, rotation)
    }

    async fn with(v: &ProviderVerifier, token: &str) -> Result<Verified, VerifyError> {
        let query = format!("token={token}");
        v.verify(&Presented { headers: &HeaderMap::new(), query: Some(&query), body: b"{}" }, 0).await
    }

    fn age(v: &ProviderVerifier, by: Duration) {
        let rotation = v.rotation.as_ref().unwrap();
        *rotation.read_at.lock().unwrap() -= by;
    }

    const OLD: &str = "old-token-of-enough-length";
    const NEW: &str = "new-token-of-enough-length";

    #[tokio::test]
    async fn a_mismatch_reads_the_store_again_at_most_every_interval() {
        let store = Arc::new(Store { value: Mutex::new(Some(OLD.into())), ..Default::default() });
        let v = rotating(&store, DEFAULT_TTL);
        assert!(with(&v, OLD).await.is_ok());
        assert_eq!(store.reads.load(Ordering::Relaxed), 0, "read at start-up, not per delivery");

        // The provider switched first; the store lists both.
        *store.value.lock().unwrap() = Some(format!("{OLD},{NEW}"));
        assert!(with(&v, NEW).await.is_err(), "within the interval after the start-up read");
        age(&v, MIN_REREAD_INTERVAL);
        assert!(with(&v, NEW).await.is_ok());
        assert!(with(&v, OLD).await.is_ok(), "both while the list says so");
        assert_eq!(store.reads.load(Ordering::Relaxed), 1);

        // Unsigned floods read at most once per interval.
        age(&v, MIN_REREAD_INTERVAL);
        for _ in 0..50 {
            assert!(with(&v, "forged-token-of-enough-len").await.is_err());
        }
        assert_eq!(store.reads.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn an_old_secret_stops_working_once_the_ttl_rereads_it() {
        let store = Arc::new(Store { value: Mutex::new(Some(format!("{OLD},{NEW}"))), ..Default::default() });
        let v = rotating(&store, Duration::from_secs(60));
        *store.value.lock().unwrap() = Some(NEW.into());
        assert!(with(&v, OLD).await.is_ok(), "cached until the TTL");
        age(&v, Duration::from_secs(60));
        assert!(with(&v, OLD).await.is_err());
        assert!(with(&v, NEW).await.is_ok());
    }

    #[tokio::test]
    async fn a_store_that_cannot_answer_or_gives_an_invalid_secret_keeps_the_one_in_use() {
        let store = Arc::new(Store { value: Mutex::new(Some(OLD.into())), ..Default::default() });
        let v = rotating(&store, Duration::from_secs(60));
        *store.value.lock().unwrap() = None;
        age(&v, Duration::from_secs(60));
        assert!(with(&v, OLD).await.is_ok(), "the store is down: the cached secret still verifies");
        assert_eq!(store.reads.load(Ordering::Relaxed), 1);

        *store.value.lock().unwrap() = Some("short".into());
        age(&v, Duration::from_secs(60));
        assert!(with(&v, OLD).await.is_ok(), "an invalid secret in the store is not used");
        assert!(with(&v, "short").await.is_err());
        assert_eq!(store.reads.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_variable_is_a_value_or_a_name_never_both() {
        let env = |k: &str| match k {
            "A_ARN" => Some("arn:a".to_owned()),
            "B" | "B_ARN" => Some("x".to_owned()),
            _ => None,
        };
        assert_eq!(named(&["A", "C"], &env).unwrap(), [("A", "arn:a".to_owned())]);
        assert!(matches!(named(&["B"], &env), Err(ConfigError::Invalid { var, .. }) if var == "B"));
    }
}
