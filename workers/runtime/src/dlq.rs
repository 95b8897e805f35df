//! Dead letters: a message that cannot be parsed or validated goes, with its
//! original key and bytes, to `<topic>.dlq`, its reason and origin in
//! headers. The worker goes on; nothing is dropped silently.

use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::Message;

/// Name of the dead-letter topic of `topic`.
pub fn topic_of(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// Header holding why the message was rejected.
pub const REASON_HEADER: &str = "dlq-reason";
/// Header naming the worker that rejected it.
pub const WORKER_HEADER: &str = "dlq-worker";
/// Header holding `topic/partition/offset` of the original.
pub const ORIGIN_HEADER: &str = "dlq-origin";

/// A rejected message, ready to be produced.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Where it goes.
    pub topic: String,
    /// The original key.
    pub key: Option<Vec<u8>>,
    /// The original bytes, untouched.
    pub payload: Vec<u8>,
    /// Why it was rejected.
    pub reason: String,
    /// `topic/partition/offset` of the original.
    pub origin: String,
}

impl DeadLetter {
    /// Rejects `message` for `reason`.
    pub fn new(message: &OwnedMessage, reason: impl Into<String>) -> Self {
        Self {
            topic: topic_of(message.topic()),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().unwrap_or_default().to_vec(),
            reason: reason.into(),
            origin: format!(
                "{}/{}/{}",
                message.topic(),
                message.partition(),
                message.offset()
            ),
        }
    }

    /// The headers carried by the dead letter.
    pub fn headers(&self, worker: &str) -> OwnedHeaders {
        OwnedHeaders::new()
            .insert(Header {
                key: REASON_HEADER,
                value: Some(self.reason.as_bytes()),
            })
            .insert(Header {
                key: WORKER_HEADER,
                value: Some(worker.as_bytes()),
            })
            .insert(Header {
                key: ORIGIN_HEADER,
                value: Some(self.origin.as_bytes()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{Headers, Timestamp};

    #[test]
    fn a_dead_letter_keeps_the_original_bytes_and_names_its_origin() {
        let original = OwnedMessage::new(
            Some(b"{not json".to_vec()),
            Some(b"k1".to_vec()),
            "telemetry.raw".into(),
            Timestamp::NotAvailable,
            2,
            41,
            None,
        );
        let letter = DeadLetter::new(&original, "expected value at line 1 column 2");
        assert_eq!(letter.topic, "telemetry.raw.dlq");
        assert_eq!(letter.payload, b"{not json");
        assert_eq!(letter.origin, "telemetry.raw/2/41");
        let headers = letter.headers("data-ingestor");
        let reason = headers.iter().find(|h| h.key == REASON_HEADER).unwrap();
        assert_eq!(reason.value.unwrap(), b"expected value at line 1 column 2");
    }
}
