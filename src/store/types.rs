//! The values the store reads and writes as types: event states and outcomes as enums stored
//! as checked strings, and the two column types whose representation differs per backend
//! (an instant, a claim token) as newtypes each dialect encodes its own way.
//!
//! The stored strings are the ones the schemas' `CHECK` constraints and older rows hold, so
//! no data migrates; nothing outside this module compares them.

use std::fmt;
use std::str::FromStr;

use time::OffsetDateTime;
use uuid::Uuid;

/// An instant as a column: `timestamptz` on Postgres, integer microseconds (UTC) on SQLite.
/// Every instant the store writes is bound from Rust, so both backends and every instance
/// share one clock (the application's), as the resolver's TTLs already assume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Stamp(pub OffsetDateTime);

impl Stamp {
    pub(crate) fn now() -> Stamp {
        Stamp(OffsetDateTime::now_utc())
    }
}

/// A claim token as a column: `uuid` on Postgres, its hyphenated text on SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claim(pub Uuid);

/// A stored name that is one of a fixed set: read back, anything else is a corrupt row.
#[derive(Debug, thiserror::Error)]
#[error("unknown {what} {value:?}")]
pub struct UnknownName {
    what: &'static str,
    value: String,
}

/// Binds a type with `as_str` as text, on any backend that has text.
macro_rules! text_column {
    ($name:ty) => {
        impl<DB: sqlx::Database> sqlx::Type<DB> for $name
        where
            str: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as sqlx::Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $name
        where
            &'q str: sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as sqlx::Database>::ArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&'q str as sqlx::Encode<'q, DB>>::encode(self.as_str(), buf)
            }
        }
    };
}

/// An enum stored as a checked string: `as_str`, `FromStr`, `Display`, serde as the string,
/// and sqlx encoding as text on any backend that has text.
macro_rules! stored_name {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(UnknownName { what: $what, value: other.to_owned() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        text_column!($name);

        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $name
        where
            &'r str: sqlx::Decode<'r, DB>,
        {
            fn decode(
                value: <DB as sqlx::Database>::ValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                Ok(<&'r str as sqlx::Decode<'r, DB>>::decode(value)?.parse()?)
            }
        }
    };
}

stored_name!(
    /// Where an inbox event stands (`webhook_inbox.state`).
    EventState, "event state" {
        /// Waiting for its `next_attempt_at`.
        Pending => "pending",
        /// Claimed by a worker under a lease.
        Processing => "processing",
        /// Finished with an [`Outcome`].
        Done => "done",
        /// Given up; an operator can replay it.
        Dead => "dead",
    }
);

stored_name!(
    /// How an event ended (`webhook_inbox.outcome`).
    Outcome, "outcome" {
        /// The message reached the CRM.
        Delivered => "delivered",
        /// A lead closed: recorded, nothing posted.
        Closed => "closed",
        /// An action this service does not act on.
        IgnoredAction => "ignored_action",
        /// An update whose contacts did not change since the lead's last processed event.
        Unchanged => "unchanged",
        /// No usable phone or e-mail.
        NoContact => "no_contact",
        /// The payload was erased before the event was processed.
        Erased => "erased",
        /// A lead the CRM did not have was created in it.
        Created => "created",
        /// The lead to create was created in the CRM earlier (a replay, a second event).
        AlreadyCreated => "already_created",
        /// Enriched and stored; by request (a backfill with `--no-message`) nothing posted.
        Stored => "stored",
        /// Dead-lettered.
        Dead => "dead",
    }
);

stored_name!(
    /// Which remembered lookup a contact row came from (`party_contacts.source`).
    ContactOrigin, "contact origin" {
        /// A CPF lookup answered this contact with this party: the lookup index.
        Lookup => "lookup",
        /// Listed in the party's person data.
        Person => "person",
    }
);

/// The paid providers, as stored in `negative_lookups.provider` and
/// `party_enrichments.provider`.
pub use crate::metrics::Provider;

text_column!(Provider);
text_column!(crate::event::Source);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stored_name_reads_back_as_itself() {
        for s in EventState::ALL {
            assert_eq!(s.as_str().parse::<EventState>().unwrap(), *s);
        }
        for o in Outcome::ALL {
            assert_eq!(o.as_str().parse::<Outcome>().unwrap(), *o);
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
        assert!("sent".parse::<Outcome>().is_err());
    }
}
