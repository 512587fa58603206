//! Subscriber segments: a connection's attributes (from its auth plugin's identity), interned
//! so connections with equal attributes share one `Segment`, and the route filters that the
//! host evaluates natively against them — once per distinct segment per event, never by
//! calling a plugin per subscriber.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};

/// Most distinct attribute sets interned per tenant; beyond it segments are not shared.
const MAX_INTERNED: usize = 10_000;

/// One distinct set of subscriber attributes.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct Segment {
    attributes: Box<[(Box<str>, Box<str>)]>,
}

impl Segment {
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| &**k == key).map(|(_, v)| &**v)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.attributes.is_empty()
    }

    /// The shared segment of connections without attributes.
    pub(crate) fn empty() -> Arc<Segment> {
        static EMPTY: OnceLock<Arc<Segment>> = OnceLock::new();
        EMPTY.get_or_init(|| Arc::new(Segment { attributes: Box::new([]) })).clone()
    }
}

/// A tenant's interned segments.
#[derive(Default)]
pub(crate) struct Segments {
    /// Held only for one lookup or insert per connection.
    interned: Mutex<HashMap<Arc<Segment>, ()>>,
}

impl Segments {
    /// The shared segment for `attributes` (sorted by key; the first value of a repeated key
    /// wins).
    pub(crate) fn intern(&self, attributes: Vec<(String, String)>) -> Arc<Segment> {
        if attributes.is_empty() {
            return Segment::empty();
        }
        let mut pairs: Vec<(Box<str>, Box<str>)> =
            attributes.into_iter().map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str())).collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs.dedup_by(|b, a| a.0 == b.0);
        let segment = Arc::new(Segment { attributes: pairs.into_boxed_slice() });
        let mut interned = self.interned.lock().expect("segments lock");
        if let Some((existing, ())) = interned.get_key_value(&segment) {
            return existing.clone();
        }
        if interned.len() < MAX_INTERNED {
            interned.insert(segment.clone(), ());
        }
        segment
    }
}

/// Comparison of one clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Op {
    Eq,
    Ne,
    In,
    NotIn,
    Exists,
}

/// One condition on a subscriber attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Clause {
    pub key: Box<str>,
    pub op: Op,
    pub values: Box<[Box<str>]>,
}

impl Clause {
    fn matches(&self, segment: &Segment) -> bool {
        let value = segment.get(&self.key);
        let any = |v: &str| self.values.iter().any(|x| &**x == v);
        match self.op {
            Op::Eq => value.is_some_and(|v| self.values.first().is_some_and(|x| &**x == v)),
            Op::Ne => value.is_none_or(|v| self.values.first().is_none_or(|x| &**x != v)),
            Op::In => value.is_some_and(any),
            Op::NotIn => value.is_none_or(|v| !any(v)),
            Op::Exists => value.is_some(),
        }
    }
}

/// ANDed clauses a recipient's segment must satisfy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Filter {
    pub clauses: Box<[Clause]>,
}

impl Filter {
    pub(crate) fn matches(&self, segment: &Segment) -> bool {
        self.clauses.iter().all(|c| c.matches(segment))
    }
}

/// Remembers a filter's verdict per segment during one delivery, so each distinct segment is
/// evaluated once however many connections share it.
pub(crate) struct Verdicts<'a> {
    filter: &'a Filter,
    seen: Vec<(*const Segment, bool)>,
}

impl<'a> Verdicts<'a> {
    /// Distinct segments remembered; past this, verdicts are computed directly.
    const MEMO: usize = 64;

    pub(crate) fn new(filter: &'a Filter) -> Self {
        Self { filter, seen: Vec::new() }
    }

    pub(crate) fn admits(&mut self, segment: &Arc<Segment>) -> bool {
        let key = Arc::as_ptr(segment);
        if let Some((_, verdict)) = self.seen.iter().find(|(p, _)| *p == key) {
            return *verdict;
        }
        let verdict = self.filter.matches(segment);
        if self.seen.len() < Self::MEMO {
            self.seen.push((key, verdict));
        }
        verdict
    }
}

/// A segment as the JSON object its connection's `welcome` shows.
impl serde::Serialize for Segment {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.attributes.iter().map(|(k, v)| (&**k, &**v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clause(key: &str, op: Op, values: &[&str]) -> Clause {
        Clause { key: key.into(), op, values: values.iter().map(|v| (*v).into()).collect() }
    }

    #[test]
    fn interning_shares_equal_sets() {
        let s = Segments::default();
        let a = s.intern(vec![("plan".into(), "pro".into()), ("locale".into(), "de".into())]);
        let b = s.intern(vec![("locale".into(), "de".into()), ("plan".into(), "pro".into())]);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(&s.intern(vec![]), &Segment::empty()));
        assert_eq!(s.interned.lock().unwrap().len(), 1);
    }

    #[test]
    fn clauses() {
        let s = Segments::default();
        let pro = s.intern(vec![("plan".into(), "pro".into())]);
        let none = Segment::empty();
        let f = |c: Clause| Filter { clauses: Box::new([c]) };
        assert!(f(clause("plan", Op::Eq, &["pro"])).matches(&pro));
        assert!(!f(clause("plan", Op::Eq, &["pro"])).matches(&none));
        assert!(f(clause("plan", Op::Ne, &["free"])).matches(&pro));
        assert!(f(clause("plan", Op::Ne, &["free"])).matches(&none));
        assert!(f(clause("plan", Op::In, &["team", "pro"])).matches(&pro));
        assert!(!f(clause("plan", Op::NotIn, &["team", "pro"])).matches(&pro));
        assert!(f(clause("plan", Op::NotIn, &["team", "pro"])).matches(&none));
        assert!(f(clause("plan", Op::Exists, &[])).matches(&pro));
        assert!(!f(clause("plan", Op::Exists, &[])).matches(&none));
    }
}
