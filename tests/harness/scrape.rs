//! `/metrics` scraped and parsed with an OpenMetrics parser (the format Prometheus negotiates),
//! so a malformed exposition fails the test instead of passing a substring check.

use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};

/// A parsed scrape.
pub struct Scrape {
    /// The text as served.
    pub text: String,
    parsed: MetricsExposition<OpenMetricsType, OpenMetricsValue>,
}

impl Scrape {
    /// Scrapes `http://127.0.0.1:{port}/metrics`; panics when it does not answer or does not parse.
    pub async fn from(port: u16) -> Self {
        let (code, text) = crate::http::get(port, "/metrics").await.expect("/metrics answers");
        assert_eq!(code, 200, "{text}");
        Self::parse(text)
    }

    /// Parses exposition text; panics when it is not valid OpenMetrics.
    pub fn parse(text: String) -> Self {
        let parsed =
            openmetrics_parser::openmetrics::parse_openmetrics(&text).unwrap_or_else(|e| panic!("not valid OpenMetrics ({e}):\n{text}"));
        Self { text, parsed }
    }

    /// Family names (without `_total`, as OpenMetrics names them).
    pub fn families(&self) -> Vec<String> {
        self.parsed.families.keys().cloned().collect()
    }

    /// The value of `family`'s sample whose labels include every pair in `labels`, when there is
    /// exactly one such sample.
    pub fn value(&self, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let values = self.values(family, labels);
        (values.len() == 1).then(|| values[0].1)
    }

    /// Every sample of `family` whose labels include `labels`: all its labels, and its value.
    pub fn values(&self, family: &str, labels: &[(&str, &str)]) -> Vec<(Vec<(String, String)>, f64)> {
        let Some(f) = self.parsed.families.get(family) else {
            return Vec::new();
        };
        f.iter_samples()
            .filter_map(|s| {
                let set = s.get_labelset().ok()?;
                let all: Vec<(String, String)> = set.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                if !labels.iter().all(|(k, v)| set.get_label_value(k) == Some(*v)) {
                    return None;
                }
                let value = match &s.value {
                    OpenMetricsValue::Gauge(n) | OpenMetricsValue::Unknown(n) => n.as_f64(),
                    OpenMetricsValue::Counter(c) => c.value.as_f64(),
                    _ => return None,
                };
                Some((all, value))
            })
            .collect()
    }
}
