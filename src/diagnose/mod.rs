//! Root-cause diagnosis of failed exchanges: what each model expects
//! (`book`), what the server said (`message`), and the rules that combine
//! them with the request (`rules`).

/// `format!` into a buffer sized for a sentence: diagnosis texts are tens
/// to a few hundred bytes, and `format!` starts from the size of its literal
/// pieces, growing the string several times on the way.
macro_rules! text {
    ($($arg:tt)*) => {{
        let mut s = String::with_capacity(128);
        let _ = std::fmt::Write::write_fmt(&mut s, format_args!($($arg)*));
        s
    }};
}

pub mod book;
pub mod message;
pub mod rules;
pub mod sources;

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

pub use book::{SignatureBook, Source};

use crate::tfserving::Exchange;

/// How sure a diagnosis is (DESIGN.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// Inferred.
    Possible,
    /// One source (the server's message, or the signature).
    Likely,
    /// The server's message and the model's signature agree.
    Certain,
}

#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    pub category: &'static str,
    pub input: Option<String>,
    pub sent_dtype: Option<String>,
    pub expected_dtype: Option<String>,
    pub sent_shape: Option<Vec<i64>>,
    pub expected_shape: Option<Vec<i64>>,
    pub summary: String,
    pub fix: String,
    pub evidence: Vec<String>,
    pub confidence: Confidence,
}

/// Learns signatures from the traffic and diagnoses exchanges.
///
/// Exchanges pass through in order. A failed exchange whose model is not yet
/// known waits (up to `max_waiting` exchanges queue behind it) so that a
/// GetModelMetadata call or a successful request later in the capture can
/// still inform its diagnosis; output order is unchanged.
pub struct Engine {
    pub book: SignatureBook,
    waiting: VecDeque<Box<Exchange>>,
    pub max_waiting: usize,
    /// Server messages already parsed: failures repeat a few messages many
    /// times, and parsing one is a long series of text searches.
    parsed: HashMap<String, message::Parsed, foldhash::fast::RandomState>,
    /// Bytes of the messages in `parsed`.
    parsed_bytes: usize,
}

/// Distinct server messages kept parsed, and their bytes (then the cache
/// starts over): a capture full of long distinct messages must not hold
/// more. Long messages are kept too: gRPC can repeat one of 16 KiB for a
/// few bytes a call (HPACK), and parsing it each time would cost far more
/// than the capture's own size.
const PARSED_KEPT: usize = 1024;
const PARSED_KEPT_BYTES: usize = 4 << 20;
/// Longer messages (REST bodies, each in the capture whole) are parsed each
/// time.
const PARSED_KEPT_LEN: usize = 64 << 10;

impl Engine {
    pub fn new(book: SignatureBook) -> Self {
        Engine {
            book,
            waiting: VecDeque::new(),
            max_waiting: 4096,
            parsed: HashMap::default(),
            parsed_bytes: 0,
        }
    }

    /// Takes an exchange; returns those ready to be reported, in order.
    pub fn push(
        &mut self,
        ex: Box<Exchange>,
        ready: &mut impl FnMut(Box<Exchange>) -> bool,
    ) -> bool {
        self.book.learn(&ex);
        self.waiting.push_back(ex);
        self.release(false, ready)
    }

    /// End of input: everything still waiting is diagnosed and released.
    pub fn finish(&mut self, ready: &mut impl FnMut(Box<Exchange>) -> bool) -> bool {
        self.release(true, ready)
    }

    fn release(&mut self, all: bool, ready: &mut impl FnMut(Box<Exchange>) -> bool) -> bool {
        while let Some(front) = self.waiting.front() {
            // Failures wait for any knowledge of their model; REST calls
            // wait for a declared signature, which names and types their
            // JSON inputs.
            let rest = front.transport == crate::tfserving::Transport::Rest
                && matches!(front.method.as_deref(), Some("Predict"));
            let blocked = !all
                && self.waiting.len() <= self.max_waiting
                && front.model.as_deref().is_some_and(|m| {
                    (!front.status.ok && !self.book.knows_model(m))
                        || (rest && !self.book.has_declared(m))
                });
            if blocked {
                break;
            }
            let Some(mut ex) = self.waiting.pop_front() else {
                break;
            };
            self.diagnose(&mut ex);
            if !ready(ex) {
                return false;
            }
        }
        true
    }

    /// Fills `diagnosis` (failures) or `warnings` (successes).
    pub fn diagnose(&mut self, ex: &mut Exchange) {
        if ex.transport == crate::tfserving::Transport::Rest {
            // A version the request names must be the one described: a
            // signature of another version would be a guess.
            let entry = ex
                .model
                .as_deref()
                .zip(ex.signature.as_deref())
                .and_then(|(m, s)| self.book.lookup(m, ex.version, s));
            // Only when the server could resolve the model version too: a
            // version seen to exist, or a label the server accepted.
            let version_exists = match (ex.version, &ex.version_label) {
                (Some(v), _) => ex
                    .model
                    .as_deref()
                    .is_some_and(|m| self.book.versions(m).contains(&v)),
                (None, Some(_)) => ex.status.ok,
                (None, None) => true,
            };
            if let Some(e) = entry.filter(|_| version_exists) {
                let sig = e.signature.clone();
                crate::tfserving::rest::apply_signature(ex, &sig);
            }
        }
        if ex.status.ok {
            ex.warnings.extend(rules::warnings(ex, &self.book));
        } else {
            let fresh;
            let parsed = match ex.status.message.as_deref() {
                Some(m) if m.len() > PARSED_KEPT_LEN => {
                    fresh = message::Parsed::of(m);
                    Some(&fresh)
                }
                Some(m) => {
                    if !self.parsed.contains_key(m) {
                        if self.parsed.len() >= PARSED_KEPT
                            || self.parsed_bytes + m.len() > PARSED_KEPT_BYTES
                        {
                            self.parsed.clear();
                            self.parsed_bytes = 0;
                        }
                        self.parsed_bytes += m.len();
                        self.parsed.insert(m.to_string(), message::Parsed::of(m));
                    }
                    self.parsed.get(m)
                }
                None => None,
            };
            ex.diagnosis = Some(Box::new(rules::diagnose_parsed(ex, &self.book, parsed)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::fixture_exchanges as exchanges;

    /// Diagnoses made from the cache of parsed server messages equal those
    /// made from a fresh parse, also after the cache has started over.
    #[test]
    fn cached_message_parses_give_the_same_diagnoses() {
        let raw = exchanges("grpc_diagnosis.pcapng");
        let failed: Vec<&Exchange> = raw
            .iter()
            .filter(|e| !e.status.ok && e.status.message.is_some())
            .collect();
        assert!(failed.len() >= 3, "{} failures", failed.len());
        let mut engine = Engine::new(SignatureBook::new());
        for ex in &raw {
            engine.book.learn(ex);
        }
        let json = |d: &Option<Box<Diagnosis>>| serde_json::to_string(d).expect("serialise");
        for round in 0..3 {
            for ex in &failed {
                let mut cached = (*ex).clone();
                engine.diagnose(&mut cached);
                let fresh = Some(Box::new(rules::diagnose(ex, &engine.book)));
                assert_eq!(json(&cached.diagnosis), json(&fresh));
                assert!(cached.diagnosis.is_some_and(|d| d.category != "other"));
            }
            for i in 0..PARSED_KEPT {
                let mut filler = failed[0].clone();
                filler.status.message = Some(format!("filler {round} {i}"));
                engine.diagnose(&mut filler);
            }
            assert!(engine.parsed.len() <= PARSED_KEPT);
        }
        // A long message is parsed each time, never kept.
        let before = engine.parsed.len();
        let mut long = failed[0].clone();
        let text = failed[0].status.message.clone().unwrap_or_default();
        long.status.message = Some(format!("{text}{}", " ".repeat(PARSED_KEPT_LEN)));
        let fresh = Some(Box::new(rules::diagnose(&long, &engine.book)));
        engine.diagnose(&mut long);
        assert_eq!(json(&long.diagnosis), json(&fresh));
        assert_eq!(engine.parsed.len(), before);
        // Messages of 16 KiB (gRPC's header cap) are kept, within the byte
        // budget: the same one is parsed once however often it repeats.
        for i in 0..2 * PARSED_KEPT_BYTES / (16 << 10) {
            let mut big = failed[0].clone();
            big.status.message = Some(format!("{text} {i:05}{}", " ".repeat(16 << 10)));
            for _ in 0..2 {
                let mut again = big.clone();
                engine.diagnose(&mut again);
            }
            assert!(engine.parsed_bytes <= PARSED_KEPT_BYTES);
            assert!(engine
                .parsed
                .contains_key(big.status.message.as_deref().unwrap_or("")));
            assert_eq!(
                engine.parsed_bytes,
                engine.parsed.keys().map(String::len).sum::<usize>()
            );
        }
    }
}
