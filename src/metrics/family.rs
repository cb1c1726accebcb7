//! Building metric families by hand, for the collectors that read their values at scrape
//! time (no registered instrument holds them).

use prometheus::core::Desc;
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};

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

    /// An empty histogram family.
    pub(super) fn histogram(name: &str, help: &str) -> Family {
        Family::new(name, help, MetricType::HISTOGRAM)
    }

    /// Adds one sample with `labels`.
    pub(super) fn add(&mut self, labels: &[(&str, &str)], value: f64) {
        let mut m = Metric::from_label(label_pairs(labels));
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

    /// Adds one histogram with `labels`: `buckets` as (upper bound, cumulative count), in
    /// bound order, without `+Inf` (the encoder writes it from `count`).
    pub(super) fn add_histogram(
        &mut self,
        labels: &[(&str, &str)],
        buckets: impl Iterator<Item = (f64, u64)>,
        count: u64,
        sum: f64,
    ) {
        let mut h = Histogram::default();
        h.set_bucket(
            buckets
                .map(|(bound, cumulative)| {
                    let mut b = Bucket::default();
                    b.set_upper_bound(bound);
                    b.set_cumulative_count(cumulative);
                    b
                })
                .collect(),
        );
        h.set_sample_count(count);
        h.set_sample_sum(sum);
        let mut m = Metric::from_label(label_pairs(labels));
        m.set_histogram(h);
        self.inner.mut_metric().push(m);
    }

    /// The finished family (one with no sample is left out of the text by the registry).
    pub(super) fn done(self) -> MetricFamily {
        self.inner
    }
}

/// `labels` as prometheus pairs, in name order, as the registered families write theirs.
fn label_pairs(labels: &[(&str, &str)]) -> Vec<LabelPair> {
    let mut pairs: Vec<LabelPair> = labels
        .iter()
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name((*name).to_owned());
            pair.set_value((*value).to_owned());
            pair
        })
        .collect();
    pairs.sort_by(|a, b| a.name().cmp(b.name()));
    pairs
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
