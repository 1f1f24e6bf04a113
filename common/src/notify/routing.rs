//! The routing table: which statuses reach which audiences, per provider. Data, not branches;
//! overridable with `ROUTING` (every provider) and `ROUTING_<PROVIDER>` (one), each
//! `status=audience+audience;...`.

use super::Audience;
use crate::event::{Provider, Status};

type Table = &'static [(Status, &'static [Audience])];

/// The default table, for providers that publish none: who to tell at each refund status.
const DEFAULT: Table = &[
    (Status::Created, &[Audience::Internal, Audience::Merchant]),
    (Status::Processing, &[Audience::Merchant]),
    (Status::InReview, &[Audience::Internal, Audience::Merchant]),
    (Status::Succeeded, &[Audience::Internal, Audience::Merchant, Audience::Payor]),
    (Status::Failed, &[Audience::Internal, Audience::Merchant, Audience::Payor]),
    (Status::Canceled, &[Audience::Internal, Audience::Merchant]),
];

/// Rainforest's published table of who its refund webhooks should reach.
const RAINFOREST: Table = &[
    (Status::Created, &[]),
    (Status::Processing, &[Audience::Internal, Audience::Merchant, Audience::Payor]),
    (Status::InReview, &[Audience::Internal, Audience::Merchant, Audience::Payor]),
    (Status::Succeeded, &[]),
    (Status::Failed, &[]),
    (Status::Canceled, &[Audience::Payor]),
];

/// Each provider's own default table.
fn default_for(provider: Provider) -> Table {
    match provider {
        Provider::Rainforest => RAINFOREST,
        _ => DEFAULT,
    }
}

/// One provider's table: who each status reaches.
type Rules = Vec<(Status, Vec<Audience>)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    tables: Vec<(Provider, Rules)>,
    /// Providers whose token-only events may still reach payors (`TOKEN_PAYORS`).
    token_payors: Vec<Provider>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RoutingError(String);

impl Default for Routing {
    fn default() -> Self {
        let tables = Provider::ALL
            .into_iter()
            .map(|p| (p, default_for(p).iter().map(|(s, a)| (*s, a.to_vec())).collect()))
            .collect();
        Routing { tables, token_payors: Vec::new() }
    }
}

impl Routing {
    /// Lets events of `providers` that only a token proves reach payors as well.
    pub fn with_token_payors(mut self, providers: Vec<Provider>) -> Self {
        self.token_payors = providers;
        self
    }

    /// Whether an event proved only by a token may reach `provider`'s payors. By default it may
    /// not: a token proves who sent a delivery, not what it says, and anyone holding it could
    /// otherwise send a branded message, with a text they chose, to an address they chose.
    pub fn token_reaches_payors(&self, provider: Provider) -> bool {
        self.token_payors.contains(&provider)
    }
}

/// `status=audience+audience;...` as (status, audiences) rules.
fn parse(spec: &str) -> Result<Rules, RoutingError> {
    spec.split(';')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|rule| {
            let (status, audiences) =
                rule.split_once('=').ok_or_else(|| RoutingError(format!("`{rule}` is not status=audiences")))?;
            let status: Status = status.trim().parse().map_err(RoutingError)?;
            let audiences = audiences
                .split('+')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(|a| {
                    Audience::ALL
                        .into_iter()
                        .find(|x| x.as_str().eq_ignore_ascii_case(a))
                        .ok_or_else(|| RoutingError(format!("unknown audience `{a}`")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((status, audiences))
        })
        .collect()
}

impl Routing {
    pub fn audiences(&self, provider: Provider, status: Status) -> Vec<Audience> {
        self.tables
            .iter()
            .find(|(p, _)| *p == provider)
            .and_then(|(_, t)| t.iter().find(|(s, _)| *s == status))
            .map(|(_, a)| a.clone())
            .unwrap_or_default()
    }

    /// Replaces the statuses named in `spec` for `provider`, or for every provider with `None`.
    /// An empty list tells nobody: `processing=internal+merchant;created=`.
    pub fn with_overrides(mut self, provider: Option<Provider>, spec: &str) -> Result<Self, RoutingError> {
        for (status, audiences) in parse(spec)? {
            for (_, table) in self.tables.iter_mut().filter(|(p, _)| provider.is_none_or(|want| *p == want)) {
                if let Some(entry) = table.iter_mut().find(|(s, _)| *s == status) {
                    entry.1 = audiences.clone();
                }
            }
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_table_matches_the_design() {
        let r = Routing::default();
        use Audience::*;
        for p in [Provider::Memberful, Provider::Conscent, Provider::Webforce, Provider::Foloosi] {
            assert_eq!(r.audiences(p, Status::Created), vec![Internal, Merchant]);
            assert_eq!(r.audiences(p, Status::Processing), vec![Merchant]);
            assert_eq!(r.audiences(p, Status::InReview), vec![Internal, Merchant]);
            assert_eq!(r.audiences(p, Status::Succeeded), vec![Internal, Merchant, Payor]);
            assert_eq!(r.audiences(p, Status::Failed), vec![Internal, Merchant, Payor]);
            assert_eq!(r.audiences(p, Status::Canceled), vec![Internal, Merchant]);
        }
    }

    #[test]
    fn rainforest_has_its_published_table() {
        let r = Routing::default();
        use Audience::*;
        let rf = |s| r.audiences(Provider::Rainforest, s);
        assert!(rf(Status::Created).is_empty());
        assert_eq!(rf(Status::Processing), vec![Internal, Merchant, Payor]);
        assert!(rf(Status::Succeeded).is_empty());
        assert!(rf(Status::Failed).is_empty());
        assert_eq!(rf(Status::Canceled), vec![Payor]);
        assert_eq!(rf(Status::InReview), vec![Internal, Merchant, Payor]);
    }

    #[test]
    fn overrides_replace_named_statuses_only() {
        let r = Routing::default().with_overrides(None, "processing=internal+merchant; created=").unwrap();
        for p in Provider::ALL {
            assert_eq!(r.audiences(p, Status::Processing), vec![Audience::Internal, Audience::Merchant]);
            assert!(r.audiences(p, Status::Created).is_empty());
        }
        assert_eq!(r.audiences(Provider::Memberful, Status::Canceled), vec![Audience::Internal, Audience::Merchant]);
        assert_eq!(r.audiences(Provider::Rainforest, Status::Canceled), vec![Audience::Payor]);
        let one = Routing::default().with_overrides(Some(Provider::Rainforest), "succeeded=merchant").unwrap();
        assert_eq!(one.audiences(Provider::Rainforest, Status::Succeeded), vec![Audience::Merchant]);
        assert_eq!(one.audiences(Provider::Memberful, Status::Succeeded).len(), 3);
        assert!(Routing::default().with_overrides(None, "done=internal").is_err());
        assert!(Routing::default().with_overrides(None, "created=everyone").is_err());
        assert!(Routing::default().with_overrides(None, "created").is_err());
    }
}
