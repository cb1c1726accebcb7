//! Building metric families by hand, for the collectors that read their values at scrape
//! time (no registered instrument holds them).

use prometheus::core::Desc;
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// One family being filled at scrape time.
pub(super) struct Family {
    inner: MetricFamily,
}

impl Family {
    /// An empty gauge family.
    pub(super) fn gauge(name: &str, help: &str) -> Family {
        Family::new(name, help, MetricType::GAUGE)
    }

    /// An empty counter family.
    pub(super) fn counter(name: &str, help: &str) -> Family {
        Family::new(name, help, MetricType::COUNTER)
    }

    fn new(name: &str, help: &str, kind: MetricType) -> Family {
        let mut inner = MetricFamily::default();
        inner.set_name(name.to_owned());
        inner.set_help(help.to_owned());
        inner.set_field_type(kind);
        Family { inner }
    }

    /// Adds one sample with `labels`.
    pub(super) fn add(&mut self, labels: &[(&str, &str)], value: f64) {
        let mut pairs: Vec<LabelPair> = labels
            .iter()
            .map(|(name, value)| {
                let mut pair = LabelPair::default();
                pair.set_name((*name).to_owned());
                pair.set_value((*value).to_owned());
                pair
            })
            .collect();
        // In name order, as the registered families write theirs.
        pairs.sort_by(|a, b| a.name().cmp(b.name()));
        let mut m = Metric::from_label(pairs);
        if self.inner.get_field_type() == MetricType::COUNTER {
            let mut c = Counter::default();
            c.set_value(value);
            m.set_counter(c);
        } else {
            let mut g = Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        }
        self.inner.mut_metric().push(m);
    }

    /// The finished family (one with no sample is left out of the text by the registry).
    pub(super) fn done(self) -> MetricFamily {
        self.inner
    }
}

/// The descriptor of a family the collector fills by hand.
pub(super) fn desc(name: &str, help: &str, labels: &[&str]) -> Result<Desc, prometheus::Error> {
    Desc::new(
        name.to_owned(),
        help.to_owned(),
        labels.iter().map(|l| (*l).to_owned()).collect(),
        Default::default(),
    )
}
