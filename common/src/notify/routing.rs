//! The routing table: which statuses reach which audiences. Data, not branches; overridable
//! with `ROUTING` (`status=audience+audience;...`).

use super::Audience;
use crate::event::Status;

/// The default table, from Rainforest's guidance on who to tell at each refund status.
const DEFAULT: &[(Status, &[Audience])] = &[
    (Status::Created, &[Audience::Internal, Audience::Merchant]),
    (Status::Processing, &[Audience::Merchant]),
    (Status::InReview, &[Audience::Internal, Audience::Merchant]),
    (Status::Succeeded, &[Audience::Internal, Audience::Merchant, Audience::Payor]),
    (Status::Failed, &[Audience::Internal, Audience::Merchant, Audience::Payor]),
    (Status::Canceled, &[Audience::Internal, Audience::Merchant]),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    table: Vec<(Status, Vec<Audience>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ROUTING: {0}")]
pub struct RoutingError(String);

impl Default for Routing {
    fn default() -> Self {
        Routing { table: DEFAULT.iter().map(|(s, a)| (*s, a.to_vec())).collect() }
    }
}

impl Routing {
    pub fn audiences(&self, status: Status) -> Vec<Audience> {
        self.table.iter().find(|(s, _)| *s == status).map(|(_, a)| a.clone()).unwrap_or_default()
    }

    /// The default table with the statuses named in `spec` replaced, e.g.
    /// `processing=internal+merchant;created=` (an empty list tells nobody).
    pub fn with_overrides(spec: &str) -> Result<Self, RoutingError> {
        let mut routing = Routing::default();
        for rule in spec.split(';').map(str::trim).filter(|r| !r.is_empty()) {
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
            if let Some(entry) = routing.table.iter_mut().find(|(s, _)| *s == status) {
                entry.1 = audiences;
            }
        }
        Ok(routing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_table_matches_the_design() {
        let r = Routing::default();
        use Audience::*;
        assert_eq!(r.audiences(Status::Created), vec![Internal, Merchant]);
        assert_eq!(r.audiences(Status::Processing), vec![Merchant]);
        assert_eq!(r.audiences(Status::InReview), vec![Internal, Merchant]);
        assert_eq!(r.audiences(Status::Succeeded), vec![Internal, Merchant, Payor]);
        assert_eq!(r.audiences(Status::Failed), vec![Internal, Merchant, Payor]);
        assert_eq!(r.audiences(Status::Canceled), vec![Internal, Merchant]);
    }

    #[test]
    fn overrides_replace_named_statuses_only() {
        let r = Routing::with_overrides("processing=internal+merchant; created=").unwrap();
        assert_eq!(r.audiences(Status::Processing), vec![Audience::Internal, Audience::Merchant]);
        assert!(r.audiences(Status::Created).is_empty());
        assert_eq!(r.audiences(Status::Canceled), Routing::default().audiences(Status::Canceled));
        assert!(Routing::with_overrides("done=internal").is_err());
        assert!(Routing::with_overrides("created=everyone").is_err());
        assert!(Routing::with_overrides("created").is_err());
    }
}
