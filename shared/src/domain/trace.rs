//! A W3C Trace Context `traceparent`: the trace a job belongs to and the span that passed it on,
//! `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`. Parsed from a client's header, stored
//! with the job, carried in its AMQP message and sent on to the provider.

use std::fmt;

use rand::Rng as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

/// The `sampled` flag: set on the traces Tollgate starts.
const SAMPLED: u8 = 0x01;

impl TraceParent {
    /// The name it travels under: an HTTP header (W3C Trace Context), and the AMQP header of
    /// every job message.
    pub const HEADER: &'static str = "traceparent";

    /// Parses a `traceparent` header. A future version is read by its version-00 prefix, as the
    /// specification asks; an invalid value (or all-zero ids) is `None`, and the caller starts a
    /// new trace.
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let mut parts = header.splitn(4, '-');
        let version = parts.next()?;
        let (trace_id, parent_id, rest) = (parts.next()?, parts.next()?, parts.next()?);
        let version = u8::from_str_radix(version, 16)
            .ok()
            .filter(|_| version.len() == 2)?;
        let flags = match version {
            0xff => return None,
            0 if rest.len() != 2 => return None,
            _ => rest
                .get(..2)
                .filter(|_| rest.len() == 2 || rest.as_bytes()[2] == b'-')?,
        };
        let trace_id: [u8; 16] = lower_hex(trace_id)?.try_into().ok()?;
        let parent_id: [u8; 8] = lower_hex(parent_id)?.try_into().ok()?;
        let flags = *lower_hex(flags)?.first()?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// A new trace, sampled.
    pub fn root() -> Self {
        let mut rng = rand::rng();
        Self {
            trace_id: rng.random::<u128>().max(1).to_be_bytes(),
            parent_id: rng.random::<u64>().max(1).to_be_bytes(),
            flags: SAMPLED,
        }
    }

    /// The same trace, passed on by a new span.
    pub fn child(&self) -> Self {
        Self {
            parent_id: rand::rng().random::<u64>().max(1).to_be_bytes(),
            ..*self
        }
    }

    /// The trace and span given as raw ids (from a tracer's span).
    pub fn from_ids(trace_id: [u8; 16], span_id: [u8; 8], flags: u8) -> Self {
        Self {
            trace_id,
            parent_id: span_id,
            flags,
        }
    }

    pub fn trace_id_bytes(&self) -> [u8; 16] {
        self.trace_id
    }

    pub fn parent_id_bytes(&self) -> [u8; 8] {
        self.parent_id
    }

    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// The trace id in lowercase hex, as logs show it.
    pub fn trace_id(&self) -> String {
        hex::encode(self.trace_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.parent_id),
            self.flags
        )
    }
}

/// Lowercase hex only: the specification forbids uppercase.
fn lower_hex(text: &str) -> Option<Vec<u8>> {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    hex::decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_header_round_trips() {
        let parsed = TraceParent::parse(SAMPLE).expect("valid");
        assert_eq!(parsed.to_string(), SAMPLE);
        assert_eq!(parsed.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn invalid_headers_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_future_version_is_read_by_its_known_prefix() {
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert_eq!(
            TraceParent::parse(future).map(|t| t.to_string()).as_deref(),
            Some(SAMPLE)
        );
    }

    #[test]
    fn a_child_keeps_the_trace_and_a_root_starts_one() {
        let parent = TraceParent::parse(SAMPLE).expect("valid");
        let child = parent.child();
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_ne!(child.to_string(), parent.to_string());
        let root = TraceParent::root();
        assert_eq!(TraceParent::parse(&root.to_string()), Some(root));
        assert_ne!(root.trace_id(), TraceParent::root().trace_id());
    }
}
