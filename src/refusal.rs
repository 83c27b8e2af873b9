//! Why something is refused, as a type: NIP-01's machine-readable prefix
//! and the human-readable detail. Policy, store, writer, NIP-77 sessions and
//! the sync client pass and match a [`Refusal`]; it becomes wire text
//! (`prefix: detail`) only where a reply is rendered (`relay/messages.rs`),
//! and a peer's text becomes one again only where it is parsed
//! ([`Refusal::from_wire`]). Metrics count refusals by [`Prefix`].

use std::borrow::Cow;

/// NIP-01's prefixes (and NIP-77's `closed`), the part clients match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prefix {
    Duplicate,
    Pow,
    Blocked,
    RateLimited,
    Invalid,
    Restricted,
    AuthRequired,
    Mute,
    /// NIP-77: the session is gone.
    Closed,
    Error,
}

impl Prefix {
    /// Every prefix, in the order metrics list them.
    pub const ALL: [Prefix; 10] = [
        Prefix::Invalid,
        Prefix::Duplicate,
        Prefix::Blocked,
        Prefix::RateLimited,
        Prefix::AuthRequired,
        Prefix::Restricted,
        Prefix::Closed,
        Prefix::Pow,
        Prefix::Mute,
        Prefix::Error,
    ];

    /// The prefix as NIP-01 spells it (without the colon).
    pub fn as_str(self) -> &'static str {
        match self {
            Prefix::Duplicate => "duplicate",
            Prefix::Pow => "pow",
            Prefix::Blocked => "blocked",
            Prefix::RateLimited => "rate-limited",
            Prefix::Invalid => "invalid",
            Prefix::Restricted => "restricted",
            Prefix::AuthRequired => "auth-required",
            Prefix::Mute => "mute",
            Prefix::Closed => "closed",
            Prefix::Error => "error",
        }
    }

    /// Position in [`Prefix::ALL`] (for per-prefix counters).
    pub fn index(self) -> usize {
        Prefix::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }

    fn parse(word: &str) -> Option<Prefix> {
        Prefix::ALL.into_iter().find(|p| p.as_str() == word)
    }
}

/// A refusal: what kind, and the detail a person reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub prefix: Prefix,
    pub detail: Cow<'static, str>,
}

impl Refusal {
    pub fn new(prefix: Prefix, detail: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal {
            prefix,
            detail: detail.into(),
        }
    }

    pub fn invalid(detail: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal::new(Prefix::Invalid, detail)
    }

    pub fn blocked(detail: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal::new(Prefix::Blocked, detail)
    }

    pub fn restricted(detail: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal::new(Prefix::Restricted, detail)
    }

    pub fn duplicate(detail: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal::new(Prefix::Duplicate, detail)
    }

    pub fn rate_limited(detail: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal::new(Prefix::RateLimited, detail)
    }

    pub fn auth_required(detail: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal::new(Prefix::AuthRequired, detail)
    }

    pub fn closed(detail: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal::new(Prefix::Closed, detail)
    }

    pub fn error(detail: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal::new(Prefix::Error, detail)
    }

    /// The node is stopping: what every request still queued is told.
    pub fn shutting_down() -> Refusal {
        Refusal::error("relay is shutting down")
    }

    /// Reads a reason another relay sent (`prefix: detail`). Text without a
    /// known prefix is an `error` whose detail is the whole text.
    pub fn from_wire(text: &str) -> Refusal {
        match text
            .split_once(':')
            .and_then(|(word, rest)| Some((Prefix::parse(word.trim())?, rest)))
        {
            Some((prefix, rest)) => Refusal::new(prefix, rest.trim().to_string()),
            None => Refusal::error(text.to_string()),
        }
    }

    pub fn is(&self, prefix: Prefix) -> bool {
        self.prefix == prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_text_reads_back_as_the_same_refusal() {
        for prefix in Prefix::ALL {
            let text = format!("{}: some detail", prefix.as_str());
            let read = Refusal::from_wire(&text);
            assert_eq!(read, Refusal::new(prefix, "some detail"), "{text}");
        }
        assert_eq!(
            Refusal::from_wire("no prefix here"),
            Refusal::error("no prefix here")
        );
        assert_eq!(Refusal::from_wire("unknown: x").prefix, Prefix::Error);
        assert_eq!(Refusal::from_wire(""), Refusal::error(""));
    }
}
