//! The trust policy: who may send what to this instance.
//!
//! - `off`: no federation route answers and nothing is sent;
//! - `trusted peers only` (the only mode once on): an accepted peer may send anything; any other
//!   instance may only ask to peer (a `Follow` of this instance's actor), which waits for an admin;
//! - a blocked instance is refused everything, whatever else holds: the blocklist wins.
//!
//! Domains are compared in their canonical form ([`crate::Domain`]), so no spelling slips past a block.

/// Whether this instance federates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Off,
    TrustedPeersOnly,
}

/// Where a peering stands, as this instance sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerStatus {
    /// This instance asked to peer and waits for the answer.
    Requested,
    /// The other instance asked to peer and waits for an admin here.
    Pending,
    Accepted,
    /// The other instance refused this instance's request.
    Rejected,
    /// An admin here blocked the instance.
    Blocked,
}

impl PeerStatus {
    pub const ALL: [PeerStatus; 5] = [
        Self::Requested,
        Self::Pending,
        Self::Accepted,
        Self::Rejected,
        Self::Blocked,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Pending => "pending",
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
            Self::Blocked => "blocked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// What an incoming activity is, as far as the policy cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    /// A `Follow` of this instance's actor: a request to peer.
    AskToPeer,
    /// An answer about a peering this instance asked for (`Accept`/`Reject` of its own Follow).
    AnswerOwnRequest,
    /// Anything else: unit follows, values, ending a peering.
    PeerTraffic,
}

/// Why an activity is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Federation is off: the route does not exist.
    Off,
    Blocked,
    NotPeer,
}

/// Decides whether an instance with `status` (none: never seen) may send an activity meaning `intent`.
pub fn admit(mode: Mode, status: Option<PeerStatus>, intent: Intent) -> Result<(), Refusal> {
    if mode == Mode::Off {
        return Err(Refusal::Off);
    }
    match (status, intent) {
        (Some(PeerStatus::Blocked), _) => Err(Refusal::Blocked),
        (Some(PeerStatus::Accepted), _) => Ok(()),
        (None | Some(PeerStatus::Rejected | PeerStatus::Pending), Intent::AskToPeer) => Ok(()),
        // Both asked at once: their Follow answers ours.
        (Some(PeerStatus::Requested), Intent::AskToPeer | Intent::AnswerOwnRequest) => Ok(()),
        _ => Err(Refusal::NotPeer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blocklist_wins_over_everything() {
        for intent in [
            Intent::AskToPeer,
            Intent::AnswerOwnRequest,
            Intent::PeerTraffic,
        ] {
            assert_eq!(
                admit(Mode::TrustedPeersOnly, Some(PeerStatus::Blocked), intent),
                Err(Refusal::Blocked)
            );
        }
    }

    #[test]
    fn strangers_may_only_ask_to_peer() {
        let mode = Mode::TrustedPeersOnly;
        assert_eq!(admit(mode, None, Intent::AskToPeer), Ok(()));
        assert_eq!(
            admit(mode, None, Intent::PeerTraffic),
            Err(Refusal::NotPeer)
        );
        assert_eq!(
            admit(mode, None, Intent::AnswerOwnRequest),
            Err(Refusal::NotPeer)
        );
        assert_eq!(
            admit(mode, Some(PeerStatus::Pending), Intent::PeerTraffic),
            Err(Refusal::NotPeer)
        );
        assert_eq!(
            admit(mode, Some(PeerStatus::Requested), Intent::PeerTraffic),
            Err(Refusal::NotPeer)
        );
        assert_eq!(
            admit(mode, Some(PeerStatus::Requested), Intent::AnswerOwnRequest),
            Ok(())
        );
        assert_eq!(
            admit(mode, Some(PeerStatus::Accepted), Intent::PeerTraffic),
            Ok(())
        );
    }

    #[test]
    fn off_refuses_everyone() {
        for status in PeerStatus::ALL.map(Some).into_iter().chain([None]) {
            assert_eq!(
                admit(Mode::Off, status, Intent::AskToPeer),
                Err(Refusal::Off)
            );
        }
    }

    #[test]
    fn statuses_round_trip() {
        for s in PeerStatus::ALL {
            assert_eq!(PeerStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(PeerStatus::parse("friend"), None);
    }
}
